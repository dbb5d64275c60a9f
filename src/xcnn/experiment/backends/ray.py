"""Plan -> Workers on a Ray cluster -> the store, which only this process (the driver) writes.

One actor per GPU, or on a cluster without GPUs one actor per node with all of its CPUs, each
holding a ``Worker`` that keeps its model loaded. The driver keeps at most ``IN_FLIGHT``
batches at each actor, so its memory and the object store stay flat however long the plan is;
results come back here and go through ``Progress.store`` exactly as in the local backend.

An actor whose process dies is restarted by Ray; the batch it was running goes to another
actor, at most ``MAX_LOSSES`` times, then its units are recorded as failed. Batches that were
only queued behind it go back to the queue at no cost.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from xcnn.errors import XcnnError
from xcnn.experiment.config import Config, ModelSpec
from xcnn.experiment.plan import Batch
from xcnn.experiment.progress import Progress
from xcnn.experiment.store import RunStore
from xcnn.experiment.worker import Worker
from xcnn.runfolder.records import UnitResult

log = logging.getLogger(__name__)

IN_FLIGHT = 2  # batches per actor: one running, one already shipped so the actor never waits
MAX_LOSSES = 3  # a batch that killed this many worker processes is recorded as failed
LOST = f"worker lost {MAX_LOSSES} times"
PROBE_SECONDS = 10.0  # to open a TCP connection to a cluster address before joining it
PROBE_PAUSE = 0.5  # between questions to an actor Ray is restarting


def execute(config: Config, batches: list[Batch], store: RunStore, progress: Progress, *,
            device: Any, save_maps: bool) -> None:
    """Run ``batches`` on Ray. ``device`` is unused: each actor's device comes from the cluster
    (a GPU each where it has GPUs) and ``config.run.device``. A process already connected to Ray
    (``ray.init`` done by the caller) is used as it is and left connected."""
    ray = _import_ray()
    owned = _connect(ray, config.run.address)
    try:
        pool = _Pool(ray, config, save_maps)
        try:
            pool.run(batches, store, progress)
        finally:
            progress.summary.workers.update(pool.throughput())
            pool.close()
    finally:
        if owned:
            ray.shutdown()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise XcnnError("run.backend = \"ray\" (or --ray) needs Ray: pip install 'xcnn[ray]'") from None
    return ray


def _connect(ray: Any, address: str | None) -> bool:
    """Start a local Ray (address None) or join a cluster; False if already connected."""
    if ray.is_initialized():
        return False
    hint = "start the head with 'ray start --head' and give its HOST:PORT, or 'auto' on a cluster node"
    if address not in (None, "auto"):
        _probe(address, hint)
    try:
        if address is None:
            # Ray runs its workers at niceness 15, for machines given to Ray alone; a Ray started
            # for one run shares this machine like a local run does, and must compete like one.
            ray.init(include_dashboard=False, _system_config={"worker_niceness": 0})
        else:
            ray.init(address=address)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = "a local Ray" if address is None else f"the Ray cluster at {address!r}"
        raise XcnnError(f"cannot start or join {where} ({_first_line(err)}); {hint}") from None
    return True


def _probe(address: str, hint: str) -> None:
    """Fail in seconds on an address nobody listens at: ray.init would retry for many minutes."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise XcnnError(f"run.address / --ray {address!r} is not HOST:PORT or 'auto'; {hint}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS).close()
    except OSError as err:
        raise XcnnError(f"no Ray cluster answers at run.address / --ray {address!r} ({err.strerror or err}); "
                        f"{hint}") from None


class _Actor:
    """A Worker in its own process; Ray makes it remote in ``_Pool`` (ray is imported lazily)."""

    def __init__(self, config: Config, device: str, save_maps: bool, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))  # the CPUs Ray gave this actor, no more
        self.worker = Worker(config, device, save_maps)

    def pid(self) -> int:
        return os.getpid()

    def run(self, batch: Batch) -> tuple[list[UnitResult], float]:
        start = time.perf_counter()
        results = self.worker.run(batch)
        return results, time.perf_counter() - start


@dataclass
class _Job:
    batch: Batch
    marked: bool = False  # its units are logged as started
    losses: int = 0
    lost_on: _Slot | None = None  # the actor that last died running it: retried elsewhere if possible


@dataclass(eq=False)
class _Slot:
    """One actor and what the driver knows about it."""

    name: str
    node: str  # Ray node id
    actor: Any
    pid: int = 0
    model: ModelSpec | None = None  # of the last batch sent: its Worker holds that model
    refs: list[Any] = field(default_factory=list)  # in flight, in the order sent
    spared: set[Any] = field(default_factory=set)  # sent before its last death was seen
    ready: bool = True  # False from its death until Ray has restarted it (or for good)
    probe_at: float | None = None  # when to ask a restarting actor whether it is back
    units: int = 0
    seconds: float = 0.0


def _losses(ray: Any) -> tuple[type[BaseException], ...]:
    """What ray.get raises when the process running a call died (killed, out of memory, its
    node gone), as opposed to an exception the Worker raised, which is a bug and stops the run."""
    e = ray.exceptions
    return (e.RayActorError, e.WorkerCrashedError, e.OutOfMemoryError, e.NodeDiedError)


class _Pool:
    def __init__(self, ray: Any, config: Config, save_maps: bool) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray = ray
        self.config = config
        self.slots: list[_Slot] = []
        remote = ray.remote(_Actor)
        for node, ip, device, threads, gpus in _layout(ray, config.run.device):
            # Pinned to its node (not soft): if the node goes, the actor dies instead of waiting
            # forever for room elsewhere, and its batches move to the other actors.
            actor = remote.options(
                num_cpus=threads, num_gpus=gpus, max_restarts=-1, max_task_retries=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
            ).remote(config, device, save_maps, threads)
            self.slots.append(_Slot(f"w{len(self.slots)}@{ip}/{device}", node, actor))
        for slot in self.slots:
            try:
                slot.pid = ray.get(slot.actor.pid.remote())
            except ray.exceptions.RayError as err:
                self.close()
                raise XcnnError(f"Ray worker {slot.name} did not start ({_first_line(err)}); install the "
                                "same xcnn and torch on every node") from None
        log.info("Ray workers: %s", ", ".join(f"{s.name} (pid {s.pid})" for s in self.slots))
        self.queue: dict[ModelSpec, deque[_Job]] = {}
        self.retries: deque[_Job] = deque()
        self.jobs: dict[Any, tuple[_Slot, _Job]] = {}  # ref -> where and what
        self.probes: dict[Any, _Slot] = {}  # ref -> the restarted actor it asks

    def run(self, batches: Sequence[Batch], store: RunStore, progress: Progress) -> None:
        for batch in batches:  # plan order: model by model
            self.queue.setdefault(batch.model, deque()).append(_Job(batch))
        while self.jobs or self.retries or any(self.queue.values()):
            self._dispatch(store)
            self._send_probes()
            waiting = [*self.jobs, *self.probes]
            resting = [s.probe_at for s in self.slots if s.probe_at is not None]
            if not waiting and not resting:  # work left and no actor to take it
                raise XcnnError("every Ray worker is gone (their nodes left the cluster, or they cannot start); "
                                "rerun the same command to resume on the nodes there are")
            pause = max(0.0, min(resting) - time.monotonic()) if resting else None
            if not waiting:
                time.sleep(pause or 0.0)
                continue
            ready, _ = self.ray.wait(waiting, num_returns=1, timeout=pause)
            for ref in ready:
                if ref in self.probes:
                    self._probed(ref)
                else:
                    self._collect(ref, store, progress)

    def _dispatch(self, store: RunStore) -> None:
        for slot in self.slots:
            while slot.ready and len(slot.refs) < IN_FLIGHT:
                job = self._next(slot)
                if job is None:
                    break
                if not job.marked:
                    store.mark(job.batch.keys(), "start")  # durable before the work, as in a local run
                    job.marked = True
                ref = slot.actor.run.remote(self._ship(job.batch))
                slot.refs.append(ref)
                slot.model = job.batch.model
                self.jobs[ref] = (slot, job)

    def _next(self, slot: _Slot) -> _Job | None:
        """A lost batch first (on another actor where there is one); then more of the model the
        actor holds, so it loads each model once; then the next model in the plan."""
        for job in self.retries:
            if job.lost_on is not slot or sum(s.ready for s in self.slots) == 1:
                self.retries.remove(job)
                return job
        same = self.queue.get(slot.model) if slot.model is not None else None
        if same:
            return same.popleft()
        for jobs in self.queue.values():
            if jobs:
                return jobs.popleft()
        return None

    def _ship(self, batch: Batch) -> Batch:
        """With ship_photos, the photo bytes travel with the batch (no path every node sees).
        A photo the driver cannot read is not shipped: the worker reports it as unreadable."""
        if not self.config.run.ship_photos:
            return batch
        photos = {}
        for s in batch.samples:
            try:
                photos[str(s.file)] = Path(s.file).read_bytes()
            except OSError:
                pass
        return replace(batch, photos=photos)

    def _collect(self, ref: Any, store: RunStore, progress: Progress) -> None:
        slot, job = self.jobs.pop(ref)
        try:
            results, seconds = self.ray.get(ref)
        except _losses(self.ray) as err:
            self._lost(slot, ref, job, err, store, progress)
            return
        finally:
            slot.refs.remove(ref)
            slot.spared.discard(ref)
        slot.units += len(results)
        slot.seconds += seconds
        progress.store(store, job.batch, results)

    def _lost(self, slot: _Slot, ref: Any, job: _Job, err: BaseException, store: RunStore,
              progress: Progress) -> None:
        """An actor died. Its calls run in the order sent, so the oldest one not sent before an
        earlier death was running: that batch is charged; the ones queued behind it are not.
        Nothing more goes to the actor until Ray has restarted it: calls sent meanwhile fail."""
        if slot.ready:
            slot.ready, slot.model, slot.probe_at = False, None, time.monotonic()
        running = next((r for r in slot.refs if r not in slot.spared), None)
        if running is not ref:
            self.retries.appendleft(job)
            return
        slot.spared = set(slot.refs) - {ref}
        job.losses += 1
        job.lost_on = slot
        log.warning("Ray worker %s died running a batch of %d units of %s (loss %d of %d): %s", slot.name,
                    len(job.batch.samples), job.batch.model.name, job.losses, MAX_LOSSES, _first_line(err))
        if job.losses >= MAX_LOSSES:
            reason = f"{LOST}: its process died while running this batch (out of memory?)"
            progress.store(store, job.batch, job.batch.failed(reason))
        else:
            self.retries.appendleft(job)

    def _send_probes(self) -> None:
        for slot in self.slots:
            if slot.probe_at is not None and slot.probe_at <= time.monotonic():
                slot.probe_at = None
                self.probes[slot.actor.pid.remote()] = slot

    def _probed(self, ref: Any) -> None:
        """A restarted actor answered (back to work), is still restarting (ask again soon), or
        is dead for good (its node left, or it cannot start): the others go on without it."""
        slot = self.probes.pop(ref)
        try:
            slot.pid = self.ray.get(ref)
        except self.ray.exceptions.ActorDiedError as err:
            log.warning("Ray worker %s is gone (%s); going on with the others", slot.name, _first_line(err))
        except self.ray.exceptions.RayActorError:
            slot.probe_at = time.monotonic() + PROBE_PAUSE
        else:
            slot.ready = True
            log.info("Ray worker %s is back (pid %d)", slot.name, slot.pid)

    def throughput(self) -> dict[str, float]:
        """Units per second of each worker, over the time it spent computing."""
        return {s.name: s.units / s.seconds for s in self.slots if s.seconds > 0}

    def close(self) -> None:
        for slot in self.slots:
            self.ray.kill(slot.actor, no_restart=True)


def _layout(ray: Any, device: str) -> list[tuple[str, str, str, int, int]]:
    """(node id, node ip, device, CPUs, GPUs) of each actor: one per GPU (with an equal share
    of its node's CPUs), or one per node with all its CPUs when there is no GPU to use."""
    nodes = [n for n in ray.nodes() if n["Alive"]]
    use_gpus = device != "cpu" and any(n["Resources"].get("GPU", 0) >= 1 for n in nodes)
    if device.startswith("cuda") and not use_gpus:
        raise XcnnError(f'run.device = "{device}" but the Ray cluster has no GPU; use "cpu" or "auto"')
    if device == "mps":
        raise XcnnError('run.device = "mps" is not available on Ray; use "cpu" or "auto"')
    layout = []
    for n in nodes:
        cpus, gpus = int(n["Resources"].get("CPU", 0)), int(n["Resources"].get("GPU", 0))
        if use_gpus:
            layout += [(n["NodeID"], n["NodeManagerAddress"], "cuda", cpus // gpus, 1) for _ in range(gpus)]
        elif cpus >= 1:
            layout.append((n["NodeID"], n["NodeManagerAddress"], "cpu", cpus, 0))
    if not layout:
        raise XcnnError("the Ray cluster has no node with a CPU or GPU to run on; add nodes with 'ray start --address'")
    return layout


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"
