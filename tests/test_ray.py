"""The Ray backend gives the local backend's records, whatever dies on the way.

Ray listens on every interface and probes a public resolver for its address, so every test that
starts Ray does it in a child process inside a network namespace of its own (``unshare -n``,
loopback only): one 2-node cluster there runs every scenario. The retry bookkeeping is also
tested in this process against a stand-in for Ray (no cluster, no network).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from tests.test_run import ROOT, make_coco, write_config  # noqa: E402
from xcnn.errors import XcnnError  # noqa: E402
from xcnn.experiment import load_config, run  # noqa: E402
from xcnn.experiment.backends import ray as ray_backend  # noqa: E402
from xcnn.experiment.layout import RECORDS_FILE  # noqa: E402
from xcnn.experiment.store import JsonlStore, record_key  # noqa: E402
from xcnn.experiment.worker import read_photo  # noqa: E402

PER_CATEGORY = 4  # 8 photos × 2 sizes = 16 units in 8 batches of 2: several in flight at each actor
UNITS = 4 * PER_CATEGORY


# --- comparing runs ---------------------------------------------------------------------------

def assert_same_records(run_dir: Path, reference: Path) -> None:
    """Same record keys, each once, and the same P (within 1e-6) as the reference run."""
    lines = [json.loads(line) for line in (run_dir / RECORDS_FILE).read_text().splitlines()]
    counts = Counter(record_key(r) for r in lines)
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1]
    got = {record_key(r): r["P"] for r in lines}
    want = {record_key(r): r["P"] for r in JsonlStore(reference / RECORDS_FILE).read()}
    assert got.keys() == want.keys()
    for key, p in want.items():
        if p is None or (isinstance(p, float) and math.isnan(p)):
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(p, abs=1e-6), key



@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_coco(tmp_path_factory.mktemp("coco"), per_category=PER_CATEGORY)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory, data: tuple[Path, Path]) -> Path:
    return write_config(tmp_path_factory.mktemp("cfg") / "cfg.toml", *data, per_category=PER_CATEGORY)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, config_file: Path, one_thread: None) -> Path:
    """The local backend's run, which every Ray run must match."""
    out = tmp_path_factory.mktemp("local") / "run"
    run(load_config(config_file), out)
    return out


# --- the retry bookkeeping, against a stand-in for Ray ------------------------------------------

class FakeRay:
    """Enough of Ray for the backend, in this process: two one-CPU nodes, actors that are real
    ``_Actor`` objects, calls run in the order sent when waited for. ``dies(batch, attempt)``
    says whether the actor's process dies running that batch; it then restarts empty, and the
    calls queued at it fail as Ray's do."""

    def __init__(self, dies: Callable[[Any, int], bool]) -> None:
        import ray

        self.exceptions = ray.exceptions
        self.dies = dies
        self.attempts: Counter[tuple[Any, ...]] = Counter()  # batch's keys -> runs started
        self.ran_on: dict[tuple[Any, ...], set[int]] = {}  # batch's keys -> actors that started it

    def is_initialized(self) -> bool:
        return True

    def nodes(self) -> list[dict[str, Any]]:
        return [{"NodeID": f"{i}" * 56, "NodeManagerAddress": f"10.0.0.{i}", "Alive": True, "Resources": {"CPU": 1.0}}
                for i in (1, 2)]  # Ray checks that node ids are 28-byte hex

    def remote(self, cls: type) -> Any:
        fake = self

        class Remote:
            def options(self, **kw: Any) -> Remote:
                return self

            def remote(self, *args: Any) -> FakeActor:
                return FakeActor(fake, cls, args)

        return Remote()

    def wait(self, refs: list[FakeRef], num_returns: int = 1,
             timeout: float | None = None) -> tuple[list[FakeRef], list[FakeRef]]:
        return refs[:1], refs[1:]

    def get(self, ref: FakeRef) -> Any:
        ref.actor.settle(ref)
        if isinstance(ref.value, BaseException):
            raise ref.value
        return ref.value

    def kill(self, actor: Any, no_restart: bool = False) -> None:
        pass


class FakeRef:
    def __init__(self, actor: FakeActor, method: str, args: tuple[Any, ...]) -> None:
        self.actor, self.method, self.args = actor, method, args
        self.value: Any = None
        self.done = False


class FakeActor:
    def __init__(self, ray: FakeRay, cls: type, args: tuple[Any, ...]) -> None:
        self.ray, self.cls, self.args = ray, cls, args
        self.instance = cls(*args)
        self.queue: list[FakeRef] = []

    def __getattr__(self, method: str) -> Any:
        actor = self

        class Method:
            def remote(self, *args: Any) -> FakeRef:
                ref = FakeRef(actor, method, args)
                actor.queue.append(ref)
                return ref

        return Method()

    def settle(self, ref: FakeRef) -> None:
        """Run the calls sent before ``ref`` and ``ref`` itself, in order."""
        while not ref.done:
            call = self.queue.pop(0)
            call.done = True
            if call.method == "run":
                batch, keys = call.args[0], tuple(call.args[0].keys())
                self.ray.attempts[keys] += 1
                self.ray.ran_on.setdefault(keys, set()).add(id(self))
                if self.ray.dies(batch, self.ray.attempts[keys]):
                    for lost in [call, *self.queue]:
                        lost.done, lost.value = True, self.ray.exceptions.ActorDiedError()
                    self.queue.clear()
                    self.instance = self.cls(*self.args)  # Ray restarts it, empty
                    continue
            call.value = getattr(self.instance, call.method)(*call.args)


def test_a_batch_that_kills_its_worker_is_retried_elsewhere_then_failed_and_nothing_else_is_lost(
        tmp_path: Path, config_file: Path, local: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def has(batch: Any, image_id: int, size: str) -> bool:
        return batch.size.label == size and any(s.image_id == image_id for s in batch.samples)

    # photo 3 at 48 px kills every process that runs it; photo 2 at its own size only the first one
    fake = FakeRay(lambda batch, attempt: has(batch, 3, "48") or (has(batch, 2, "original") and attempt == 1))
    monkeypatch.setattr(ray_backend, "_import_ray", lambda: fake)
    summary = run(replace(cfg := load_config(config_file), run=replace(cfg.run, backend="ray")), tmp_path / "run")

    poison = next(keys for keys in fake.attempts if ("resnet18", "48", "3") in {k[:3] for k in keys})
    assert fake.attempts[poison] == ray_backend.MAX_LOSSES and len(fake.ran_on[poison]) == 2  # both actors
    assert max(fake.attempts.values()) == ray_backend.MAX_LOSSES and sorted(fake.attempts.values())[-2] == 2
    failures = [json.loads(line) for line in (tmp_path / "run" / "failures.jsonl").read_text().splitlines()]
    assert sorted(("resnet18", f["size"], str(f["id"]), f["class"]) for f in failures) == sorted(poison)
    assert all(f["reason"].startswith(ray_backend.LOST) for f in failures)
    assert summary.failures == Counter({ray_backend.LOST: len(poison)})

    # every other unit, the once-killed batch and those queued behind a death included, as locally
    expected = tmp_path / "expected"
    expected.mkdir()
    rows = [json.loads(line) for line in (local / RECORDS_FILE).read_text().splitlines()]
    (expected / RECORDS_FILE).write_text("".join(
        json.dumps(r) + "\n" for r in rows if record_key(r)[:4] not in poison))
    assert_same_records(tmp_path / "run", expected)
    assert sorted(summary.workers) == ["w0@10.0.0.1/cpu", "w1@10.0.0.2/cpu"]
    assert all(rate > 0 for rate in summary.workers.values())


def test_shipped_photo_bytes_read_like_the_file_and_errors_name_the_photo(data: tuple[Path, Path]) -> None:
    photo = data[1] / "0001.png"
    gone = "/nowhere/0001.png"  # a path the worker cannot see: only the bytes arrive
    assert (read_photo(gone, {gone: photo.read_bytes()}, 10**6) == read_photo(str(photo), {}, 10**6)).all()
    with pytest.raises(XcnnError, match=f"cannot read image {gone}"):
        read_photo(gone, {gone: b"not a png"}, 10**6)


def test_ray_user_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    with pytest.raises(XcnnError, match="no Ray cluster answers at .*'127.0.0.1:1'"):
        ray_backend._probe("127.0.0.1:1", "hint")  # nothing listens on port 1; Ray is not started
    with pytest.raises(XcnnError, match="not HOST:PORT"):
        ray_backend._probe("head-node", "hint")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(XcnnError, match=r"pip install 'xcnn\[ray\]'"):
        ray_backend._import_ray()
    monkeypatch.setattr(ray, "nodes", lambda: [{"NodeID": "n", "NodeManagerAddress": "h", "Alive": True,
                                                "Resources": {"CPU": 4.0}}])
    with pytest.raises(XcnnError, match='run.device = "cuda" but the Ray cluster has no GPU'):
        ray_backend._layout(ray, "cuda")


def test_actors_one_per_gpu_else_one_per_node_with_its_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    nodes = [{"NodeID": "a", "NodeManagerAddress": "h1", "Alive": True, "Resources": {"CPU": 16.0, "GPU": 2.0}},
             {"NodeID": "b", "NodeManagerAddress": "h2", "Alive": True, "Resources": {"CPU": 8.0}},
             {"NodeID": "c", "NodeManagerAddress": "h3", "Alive": False, "Resources": {"CPU": 8.0}}]
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    assert ray_backend._layout(ray, "auto") == [("a", "h1", "cuda", 8, 1), ("a", "h1", "cuda", 8, 1)]
    assert ray_backend._layout(ray, "cpu") == [("a", "h1", "cpu", 16, 0), ("b", "h2", "cpu", 8, 0)]


# --- a real Ray cluster, inside a network namespace ----------------------------------------------

def _namespace_problem() -> str | None:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs unshare (util-linux) and ip (iproute2) to keep Ray off the network"
    try:
        probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True,
                               timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unshare -n failed ({err}); Ray is only started inside a network namespace"
    if probe.returncode:
        return f"unshare -n is not permitted here ({probe.stderr.strip()}); Ray is only started inside one"
    return None


@pytest.fixture(scope="module")
def cluster_runs(tmp_path_factory: pytest.TempPathFactory, config_file: Path) -> tuple[Path, dict[str, Any]]:
    """The child process's three runs on one 2-node cluster (see ``_child``)."""
    problem = _namespace_problem()
    if problem:
        pytest.skip(problem)
    root = tmp_path_factory.mktemp("ray")
    shutil.copy(config_file, root / "cfg.toml")
    ray_tmp = tempfile.mkdtemp(prefix="xr", dir="/tmp")  # Ray's socket paths must stay short
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT)])  # the package, and this file's `tests` imports
    env = {**os.environ, "PYTHONPATH": path, "RAY_TMPDIR": ray_tmp, "RAY_DISABLE_USAGE_STATS": "1", "OMP_NUM_THREADS": "1"}
    cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable,
           str(Path(__file__).resolve()), str(root)]
    try:
        child = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert child.returncode == 0, child.stderr[-4000:]
    return root, json.loads((root / "child.json").read_text())


def test_records_on_a_ray_cluster_equal_the_local_ones(cluster_runs: tuple[Path, dict[str, Any]],
                                                       local: Path) -> None:
    root, info = cluster_runs
    assert_same_records(root / "ray", local)
    assert len(info["workers"]) == 2 and all(rate > 0 for rate in info["workers"].values())  # one per node
    assert (root / "ray" / "exp.json").is_file()


def test_a_worker_process_killed_mid_batch_changes_nothing(cluster_runs: tuple[Path, dict[str, Any]],
                                                           local: Path) -> None:
    root, info = cluster_runs
    assert info["killed_pid"] and info["losses"] >= 1  # a batch did die with it and ran again
    assert_same_records(root / "worker-killed", local)
    assert (root / "worker-killed" / "failures.jsonl").read_text() == ""


def test_the_driver_killed_mid_run_resumes_with_the_same_records(cluster_runs: tuple[Path, dict[str, Any]],
                                                                 local: Path) -> None:
    root, info = cluster_runs
    assert 0 < info["lines_at_kill"] < UNITS * 5 and not info["exports_at_kill"]
    assert info["rerun"] == 0, info.get("rerun_stderr")
    assert_same_records(root / "driver-killed", local)


# --- the child: runs inside the namespace --------------------------------------------------------

def _child(root: Path) -> None:
    """One 2-node cluster (1 CPU each): a plain run, a run with a worker process killed, a
    driver killed with SIGKILL and run again. Writes what the tests check into child.json."""
    import ray
    from ray.cluster_utils import Cluster

    logging.basicConfig(level=logging.WARNING)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    info: dict[str, Any] = {"seconds": {}}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        info["seconds"][name] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    try:
        ray.init(address=cluster.address)
        lap("cluster")
        loaded = load_config(root / "cfg.toml")
        config = replace(loaded, run=replace(loaded.run, backend="ray", address=cluster.address))
        info["workers"] = run(config, root / "ray").workers
        lap("plain")
        shipped = replace(config.run, ship_photos=True)
        info.update(_with_a_worker_killed(lambda: run(replace(config, run=shipped), root / "worker-killed")))
        lap("worker killed")
        ray.shutdown()
        info.update(_driver_killed(root, cluster.address))
        lap("driver killed")
    finally:
        ray.shutdown()
        cluster.shutdown()
    (root / "child.json").write_text(json.dumps(info))


def _with_a_worker_killed(body: Callable[[], Any]) -> dict[str, Any]:
    """Run ``body``; when the first batch comes back, SIGKILL an actor that has batches in flight."""
    Pool = ray_backend._Pool
    collect, lost = Pool._collect, Pool._lost
    seen = {"killed_pid": 0, "losses": 0}

    def collect_then_kill(self: Any, *args: Any) -> None:
        collect(self, *args)
        busy = next((s for s in self.slots if s.refs), None)
        if not seen["killed_pid"] and busy is not None:
            os.kill(busy.pid, signal.SIGKILL)
            seen["killed_pid"] = busy.pid

    def count(self: Any, *args: Any) -> None:
        seen["losses"] += 1
        lost(self, *args)

    Pool._collect, Pool._lost = collect_then_kill, count  # type: ignore[method-assign]
    try:
        body()
    finally:
        Pool._collect, Pool._lost = collect, lost  # type: ignore[method-assign]
    return seen


def _driver_killed(root: Path, address: str) -> dict[str, Any]:
    """`xcnn run` joining the cluster from the config, SIGKILLed after its first records, then
    the same run again with --ray ADDRESS."""
    out = root / "driver-killed"
    cfg = root / "cfg-ray.toml"
    cfg.write_text((root / "cfg.toml").read_text().replace("[run]", f'[run]\nbackend = "ray"\naddress = "{address}"'))
    command = [sys.executable, "-m", "xcnn", "run", str(cfg), "--out", str(out), "--no-report"]
    store = out / RECORDS_FILE
    driver = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while driver.poll() is None and time.monotonic() < deadline:
        if store.exists() and store.read_bytes().count(b"\n") >= 6:  # a unit and a bit
            break
        time.sleep(0.005)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    info: dict[str, Any] = {"lines_at_kill": store.read_bytes().count(b"\n") if store.exists() else 0,
                            "exports_at_kill": (out / "exp.json").exists()}
    again = subprocess.run([*command, "--ray", address], cwd=ROOT, capture_output=True, text=True, timeout=300)
    info["rerun"], info["rerun_stderr"] = again.returncode, again.stderr[-3000:]
    return info


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
