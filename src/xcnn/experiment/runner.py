"""The experiment: plan the units still to do, have workers compute them, store the results.

    planner (plan.py) -> backend (backends/local.py or backends/ray.py) running Workers
    (worker.py) -> the single writer (store.py)

This module wires them: it takes the run folder's lock, checks the run's identity, selects the
photos, plans, hands the plan to a backend, and writes the exports. Nothing here depends on
which backend runs the workers.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xcnn.data.folder import CSV_NAME
from xcnn.data.formats import DataSource
from xcnn import registry
from xcnn.errors import XcnnError
from xcnn.files import write_atomic
from xcnn.experiment.config import Config
from xcnn.experiment.layout import FILTERED_FILE, SKIPPED_FILE
from xcnn.experiment.plan import Batch, all_batches, missing, plan
from xcnn.experiment.store import DEMO_DIR, RunStore, UnitKey

log = logging.getLogger(__name__)

KILLED = "killed twice while running"
ALL_PHOTOS = 2**62  # images_per_category = "all": more than any dataset holds
DRAW_EVERY = 0.1  # seconds: a bar inside a batch is redrawn at most ~10 times a second
HEARTBEAT = 1.0  # seconds: ... and at least once a second, also while one chunk of passes runs
LOG_EVERY = 30.0  # seconds between two progress lines when stderr is a file, not a terminal


@dataclass
class Summary:
    records: int = 0  # records written by this call
    records_total: int = 0  # records in RUN_DIR/records.jsonl after this call, this config's or not
    check_rows: int = 0  # rows of checks.jsonl written by this call
    units_done_before: int = 0
    units_total: int = 0
    photos: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # failed units by reason, this call
    filtered: int = 0  # units of this config left out by run.max_target_rank, this call's and earlier ones
    skipped_images: dict[str, int] = field(default_factory=dict)  # dataset selection, by reason
    seconds: float = 0.0
    workers: dict[str, float] = field(default_factory=dict)  # worker -> units per second (Ray)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


def run(config: Config, run_dir: str | Path, save_maps: bool = False, retry_killed: bool = False) -> Summary:
    """Run (or resume) the experiment into ``run_dir`` and write its exports.

    Holds ``RUN_DIR/.lock`` for its whole life: a second run on the same folder is refused."""
    from xcnn import __version__
    from xcnn.experiment.export import write_exports

    start = time.perf_counter()
    run_dir = Path(run_dir)
    if config.backend == "local" and config.address is not None:
        log.warning("run.address %r is ignored: the backend is local (this machine alone); set run.backend = "
                    "\"ray\" or pass --ray %s to use that cluster", config.address, config.address)
    _check_data_paths(config)
    device = resolve_device(config.device) if config.backend == "local" else None
    with RunStore(run_dir) as store:
        data = _dataset(config, run_dir)
        store.check_identity(config.identity(_digest(data)), config.source)
        _preflight(config)  # before the data: a missing model fails in seconds
        samples, skipped = _select(config, data)
        write_atomic(run_dir / SKIPPED_FILE, data.open().skipped_jsonl())
        import torch

        # every unit with its batch (record units, baselines, check batches), done or not
        units = [(b.key(x), x, b) for b in all_batches(config, samples) for x in b.samples]
        # record_units: what a report of a killed run counts its "N of M units done" against
        body = {"identity": config.identity(_digest(data)), "config": config.to_dict(), "source": config.source,
                "xcnn": __version__, "torch": torch.__version__, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "record_units": sum(1 for _, _, b in units if b.check is None),
                # how the report (torch-free, without the plugins) names, orders and draws them
                "registry": registry.describe(config.methods),
                "plugins": dict(config.plugins)}
        store.write_config(body)
        log.info(config.checks.describe(config.faithfulness_sizes(), config.check_size()))

        if retry_killed:
            store.forget_starts()

        def complete(batch: Batch, sample: Any) -> bool:
            return not missing(config, batch, sample, store.records.done, store.check_groups)

        # A filtered unit is done: it is started again (and may be killed) only with its batch.
        filtered = store.filtered_units
        # A unit killed twice (out of memory, most likely) is given up until --retry-killed, or it
        # would kill every rerun; a check unit's row names its check ("dog#randomisation").
        store.open_failures(keep=[_killed_row(k, x) for k, x, b in units if store.starts[k] >= 2
                                  and k not in filtered and not complete(b, x)])
        summary = Summary(skipped_images=dict(skipped), units_total=len(units),
                          photos=len({str(s.image_id) for s in samples}))
        summary.failures.update(KILLED for _ in store.failed)
        closed = store.failed
        summary.units_done_before = sum(1 for k, x, b in units if k in closed or k in filtered or complete(b, x))
        batches = plan(config, samples, store.records.done, closed, store.check_groups, filtered)
        log.info("%d units, %d already done, %d batches to run", summary.units_total, summary.units_done_before,
                 len(batches))
        if batches:
            if config.backend == "ray":
                from xcnn.experiment.backends import ray as backend
            else:
                from xcnn.experiment.backends import local as backend  # type: ignore[no-redef]
            todo = {k for k, x, b in units if k not in closed and k not in filtered and not complete(b, x)}
            with Progress(summary, todo) as bar:
                backend.execute(config, batches, store, bar, device=device, save_maps=save_maps)
        summary.check_rows = store.check_rows
        summary.records_total = len(store.records.done)
        summary.filtered = len(store.filtered_units.intersection(k for k, _, _ in units))
        summary.seconds = time.perf_counter() - start
        _log_summary(summary)
        if config.max_target_rank is not None:
            log.info("%d units filtered by max_target_rank (target's rank over %d: no maps, no records; "
                     "listed in %s)", summary.filtered, config.max_target_rank, run_dir / FILTERED_FILE)
        # the report's header says how long the run took (this call; a resumed run adds up)
        store.write_config({**body, "run_seconds": round(summary.seconds, 1),
                            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        write_exports(run_dir)
    return summary


def _killed_row(key: UnitKey, sample: Any) -> dict[str, Any]:
    return {"CNN": key[0], "size": key[1], "id": sample.image_id, "class": key[3], "file": Path(sample.file).name,
            "reason": f"{KILLED} (out of memory?); lower run.max_pixels or batch_size, "
                      "then rerun with --retry-killed"}


# --- set-up -----------------------------------------------------------------------------

def _dataset(config: Config, run_dir: Path) -> DataSource:
    """The config's dataset, not yet read (the demo set is built here: it is COCO-format)."""
    from xcnn.data.formats import FORMATS

    if config.demo:
        from xcnn.data import demo

        ann_file, image_dir = demo.build(Path(config.demo_dir) if config.demo_dir else run_dir / DEMO_DIR)
        return DataSource("coco", {"ann_file": str(ann_file), "image_dir": str(image_dir)})
    paths = {k: getattr(config, k) for k in FORMATS[config.format] if getattr(config, k) is not None}
    return DataSource(config.format, paths)


def _digest(data: DataSource) -> str:
    """The dataset's identity: the content of its annotations (which name every photo), not
    their path, so a moved data folder still resumes and an edited one does not."""
    return data.digest()


def _select(config: Config, data: DataSource) -> tuple[list[Any], dict[str, int]]:
    wanted = config.images_per_category or ALL_PHOTOS
    samples, skipped = data.open().select(list(config.categories), wanted, config.seed,
                                          config.min_area, max_pixels=config.max_pixels)
    if not samples:
        raise XcnnError(
            f"no usable image for {', '.join(config.categories)} in {data.where} "
            f"(skipped: {dict(skipped) or 'none found'}); check the categories and data.min_area"
        )
    per = Counter(s.category for s in samples)
    short = {c: per[c] for c in config.categories if per[c] < wanted} if config.images_per_category else {}
    # A set smaller than asked is the data, not a fault: the demo asks 2 of categories that have 1.
    log.info("selected %d (photo, category) pairs from %d photos, %s per category%s; skipped: %s",
             len(samples), len({str(s.image_id) for s in samples}),
             f"up to {wanted}" if config.images_per_category else "every usable photo",
             f" (fewer usable: {', '.join(f'{c} {n}' for c, n in short.items())})" if short else "",
             dict(skipped) or "none")
    return samples, skipped


def _check_data_paths(config: Config) -> None:
    """Cheap checks first: a missing dataset should not wait for every model to load."""
    if config.demo:
        return
    hint = "fix the path in the config" + (", or fetch the data with 'xcnn data coco'" if config.format == "coco" else "")
    if config.format == "coco" and not Path(str(config.ann_file)).is_file():
        raise XcnnError(f"data.ann_file: {config.ann_file} not found; {hint} ({config.source})")
    for key in ("image_dir", "root", "box_dir"):
        value = getattr(config, key)
        if value is not None and not Path(value).is_dir():
            raise XcnnError(f"data.{key}: {value} is not a folder; {hint} ({config.source})")
    if config.format == "folder" and not (Path(str(config.root)) / CSV_NAME).is_file():
        raise XcnnError(f"data.root: {config.root} holds no {CSV_NAME}; write it (columns image, mask, category) "
                        f"or fix the path ({config.source})")


def resolve_device(name: str) -> Any:
    """A torch device from "auto", "cpu", "cuda[:N]" or "mps"; one line if it is not here."""
    import re

    import torch

    if not re.fullmatch(r"cpu|auto|cuda(:\d+)?|mps", name):
        raise XcnnError(f'device {name!r}: use "cpu", "cuda", "cuda:N", "mps" or "auto"')

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise XcnnError(f'device "{name}" asked but no CUDA device is available; use "cpu" or "auto"')
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise XcnnError(f'device "{name}" asked but this machine has {torch.cuda.device_count()} CUDA device(s)')
    if name == "mps" and not torch.backends.mps.is_available():
        raise XcnnError('device "mps" asked but Apple\'s MPS is not available here; use "cpu" or "auto"')
    return torch.device(name)


def _preflight(config: Config) -> None:
    """Load each model once and check its layer, its classes under the target rule and the run's
    sizes, so a bad entry fails before any work (not after the models before it made records)."""
    from xcnn.experiment.targets import check_model
    from xcnn.experiment.worker import load_model

    for i, spec in enumerate(config.models):
        try:
            lm = load_model(spec, "cpu")
            check_model(config, lm)
            lm.explainer(spec.gradcam_layer)
        except XcnnError as err:
            raise XcnnError(f"models[{i}] ({spec.name}): {err}") from None


def live_terminal() -> bool:
    """Whether stderr is a terminal: bars are redrawn in place there; in a file (a redirected
    or nohup'd run) a bar's carriage returns would break the log lines, so lines replace it."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """The progress bar and tally every backend reports to: units, counted once each, and the
    passes inside the running batch (``PassBar``) of a worker in this process (a Ray worker's
    are not seen: only its units move the bar). A bar on a terminal; on a file, a progress line
    at most every LOG_EVERY seconds."""

    def __init__(self, summary: Summary, todo: set[UnitKey], live: bool | None = None) -> None:
        self.summary = summary
        self.todo = set(todo)  # units not done when the run started
        self.live = live_terminal() if live is None else live
        self._done = summary.units_done_before
        self._bar: Any = None
        self._hooks: list[Any] = []

    def __enter__(self) -> Progress:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        from xcnn.methods.passes import reporting

        if self.live:  # log lines above the bars; to a file they go as they are
            self._hooks.append(logging_redirect_tqdm())
        self._bar = tqdm(total=self.summary.units_total, initial=self.summary.units_done_before, unit="unit",
                         desc="xcnn run", dynamic_ncols=True, disable=not self.live)
        self._passes = PassBar(self.live, head=lambda: f"{self._done}/{self.summary.units_total} units",
                               outer=self._bar)
        self._hooks.append(reporting(self.passes))
        for hook in self._hooks:
            hook.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._passes.close()
        self._bar.close()
        for hook in reversed(self._hooks):
            hook.__exit__(*exc)

    def passes(self, label: str, done: int, planned: int) -> None:
        """The reporter of xcnn.methods.passes: a loop inside the running batch moved."""
        self._passes(label, done, planned)

    def store(self, store: RunStore, batch: Batch, results: Sequence[Any]) -> None:
        """Hand one batch's results to the store, count them, and log the units as ended."""
        for r in results:
            sample = next(s for s in batch.samples if batch.key(s) == r.key)
            photo = (sample.image_id, Path(sample.file).name)
            self.summary.records += store.add(r.key, r.records, r.failure, r.files, photo,
                                              checks=getattr(r, "checks", ()), filtered=getattr(r, "filtered", None))
            if r.failure is not None and r.key in self.todo:
                log.warning("%s %s photo %s (%s): %s", *r.key[:3], r.key[3], r.failure)
                self.summary.failures[r.failure.split(":")[0]] += 1
        store.mark(batch.keys(), "end")
        new = self.todo.intersection(batch.keys())
        self.todo -= new
        self._done += len(new)
        self._passes.clear()  # the batch is over, also a loop an error cut short
        self._bar.update(len(new))
        self._passes.tick()


class PassBar:
    """The loops running inside a batch or an engine call (xcnn.methods.passes): "label done/planned".

    On a terminal: a bar under any other (``leave=False``: gone when the loops are), the innermost
    loop's passes as the bar, the loops around it in its description ("randomisation steps 2/5,
    smoothgrad passes"), redrawn at most every DRAW_EVERY seconds, and every HEARTBEAT seconds by
    a thread of its own (started by the first report): a chunk of passes can take longer than
    that (on 2 CPU cores, one of Score-CAM's ~270 forwards at 224 px takes ~20 s), and its clock
    keeps moving meanwhile. In a file: an INFO line every LOG_EVERY seconds, after ``head()``
    (what the caller counts, e.g. the run's units), also while one chunk runs.

    Called as the reporter: ``with passes.reporting(PassBar(live)): ...``, then ``close()``.
    ``outer``: the bar above it (the run's units), whose clock the heartbeat keeps moving too."""

    def __init__(self, live: bool, head: Callable[[], str] | None = None, outer: Any = None) -> None:
        self.live = live
        self._head = head
        self._outer = outer
        # label -> (done, planned, time.time() it began), outermost first
        self._loops: dict[str, tuple[int, int, float]] = {}
        self._bar: Any = None
        self._showing: tuple[str, float] | None = None  # the loop the bar counts: (label, began)
        self._drawn = 0.0
        self._logged = time.monotonic()
        self._lock = threading.Lock()  # the loops and the bar, between the caller and the heartbeat
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __call__(self, label: str, done: int, planned: int) -> None:
        with self._lock:
            if done == 0:
                self._loops.pop(label, None)  # started (again): now the innermost
            if done < planned:
                self._loops[label] = (done, planned, self._loops.get(label, (0, 0, time.time()))[2])
            else:
                self._loops.pop(label, None)
            if self.live and time.monotonic() - self._drawn >= DRAW_EVERY:
                self._draw()
            if self._beat is None:
                self._beat = threading.Thread(target=self._heartbeat, name="xcnn-progress", daemon=True)
                self._beat.start()
        self.tick()

    def tick(self) -> None:
        """In a file: the progress line, when LOG_EVERY seconds passed since the last one."""
        with self._lock:
            now = time.monotonic()
            if self.live or now - self._logged < LOG_EVERY:
                return
            self._logged = now
            parts = [self._head()] if self._head is not None else []
            parts += [f"{label} {done}/{planned}" for label, (done, planned, _) in self._loops.items()]
        if parts:
            log.info("progress: %s", "; ".join(parts))

    def clear(self) -> None:
        """Forget every loop (the batch is over, or an error cut one short) and take the bar away."""
        with self._lock:
            self._loops.clear()
            self._close_bar()

    def close(self) -> None:
        self.clear()
        self._stop.set()
        if self._beat is not None:
            self._beat.join()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._showing = None

    def _draw(self) -> None:
        """The bar as the loops are now (the lock held)."""
        from tqdm import tqdm

        self._drawn = time.monotonic()
        if not self._loops:
            self._close_bar()
            return
        *outer, (label, (done, planned, began)) = self._loops.items()
        desc = ", ".join([*(f"{lab} {d}/{p}" for lab, (d, p, _) in outer), label])
        unit = _singular(label.rpartition(" ")[2])  # "scorecam passes": pass/s
        if self._bar is None:
            # miniters=1, mininterval=0: every call draws; the calls themselves are throttled
            self._bar = tqdm(total=planned, desc=desc, unit=unit, leave=False, dynamic_ncols=True, miniters=1,
                             mininterval=0)
        elif self._bar.desc != desc:
            self._bar.set_description_str(desc, refresh=False)
        self._bar.unit = unit
        if self._showing != (label, began):  # another loop, or this one begun again
            if self._showing is not None:
                self._bar.reset(total=planned)
            # the clock and the rate from the loop's start, not from a (throttled) first draw
            self._bar.start_t = self._bar.last_print_t = began
            self._showing = (label, began)
        if done != self._bar.n:
            self._bar.update(done - self._bar.n)
        else:
            self._bar.refresh()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            if not self.live:
                self.tick()
                continue
            with self._lock:
                if self._outer is not None:
                    self._outer.refresh()
                if self._loops or self._bar is not None:
                    self._draw()


def _singular(word: str) -> str:
    return word[:-2] if word.endswith("sses") else word[:-1] if word.endswith("s") else word


def _log_summary(s: Summary) -> None:
    failed = dict(s.failures) or "none"
    log.info(
        "%d records and %d check rows written in %.1f s; units: %d total, %d already done, %d failed (%s); "
        "images skipped by the selection: %s",
        s.records, s.check_rows, s.seconds, s.units_total, s.units_done_before, s.failed, failed, s.skipped_images or "none",
    )
    if s.workers:
        log.info("per worker: %s", ", ".join(f"{w} {r:.2f} units/s" for w, r in sorted(s.workers.items())))
