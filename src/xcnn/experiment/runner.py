"""The experiment: plan the units still to do, have workers compute them, store the results.

    planner (plan.py) -> backend (backends/local.py or backends/ray.py) running Workers
    (worker.py) -> the single writer (store.py)

This module wires them: it takes the run folder's lock, checks the run's identity, selects the
photos, plans, hands the plan to a backend, and writes the exports. Nothing here depends on
which backend runs the workers.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from xcnn.data.folder import CSV_NAME
from xcnn.data.formats import DataSource
from xcnn import registry
from xcnn.errors import XcnnError
from xcnn.files import write_atomic
from xcnn.experiment.backends import BACKENDS
from xcnn.experiment.config import Config
from xcnn.experiment.layout import FILTERED_FILE, SKIPPED_FILE
from xcnn.experiment.plan import Batch, CheckJob, all_batches, missing, plan
from xcnn.experiment.progress import Progress, Summary
from xcnn.experiment.store import DEMO_DIR, RunStore
from xcnn.runfolder.records import UnitKey

log = logging.getLogger(__name__)

__all__ = ["Summary", "resolve_device", "run"]

KILLED = "killed twice while running"
ALL_PHOTOS = 2**62  # images_per_category = "all": more than any dataset holds

Unit = tuple[UnitKey, Any, Batch]  # a unit's key, its sample and its batch


def run(config: Config, run_dir: str | Path, save_maps: bool = False, retry_killed: bool = False) -> Summary:
    """Run (or resume) the experiment into ``run_dir`` and write its exports.

    Holds ``RUN_DIR/.lock`` for its whole life: a second run on the same folder is refused."""
    from xcnn.experiment.export import write_exports

    start = time.perf_counter()
    run_dir = Path(run_dir)
    if config.run.backend == "local" and config.run.address is not None:
        log.warning("run.address %r is ignored: the backend is local (this machine alone); set run.backend = "
                    "\"ray\" or pass --ray %s to use that cluster", config.run.address, config.run.address)
    _check_data_paths(config)
    device = resolve_device(config.run.device) if config.run.backend == "local" else None
    with RunStore(run_dir) as store:
        data = _dataset(config, run_dir)
        store.check_identity(config.identity(_digest(data)), config.source)
        _preflight(config)  # before the data: a missing model fails in seconds
        samples, skipped = _select(config, data)
        write_atomic(run_dir / SKIPPED_FILE, data.open().skipped_jsonl())
        # every unit with its batch (record units, baselines, check batches), done or not
        units = [(b.key(x), x, b) for b in all_batches(config, samples) for x in b.samples]
        body = _config_body(config, data, units)
        store.write_config(body)
        log.info(config.checks.describe(config.faithfulness_sizes(), config.check_size()))
        if retry_killed:
            store.forget_starts()
        summary = Summary(skipped_images=dict(skipped), units_total=len(units),
                          photos=len({str(s.image_id) for s in samples}))
        todo = _open_units(config, store, units, summary)
        batches = plan(config, samples, store.records.done, store.failed, store.check_groups, store.filtered_units)
        log.info("%d units, %d already done, %d batches to run", summary.units_total, summary.units_done_before,
                 len(batches))
        if batches:
            with Progress(summary, todo) as bar:
                BACKENDS[config.run.backend]().execute(config, batches, store, bar, device=device, save_maps=save_maps)
        summary.check_rows = store.check_rows
        summary.records_total = len(store.records.done)
        summary.filtered = len(store.filtered_units.intersection(k for k, _, _ in units))
        summary.seconds = time.perf_counter() - start
        _log_summary(summary)
        if config.run.max_target_rank is not None:
            log.info("%d units filtered by max_target_rank (target's rank over %d: no maps, no records; "
                     "listed in %s)", summary.filtered, config.run.max_target_rank, run_dir / FILTERED_FILE)
        # the report's header says how long the run took (this call; a resumed run adds up)
        store.write_config({**body, "run_seconds": round(summary.seconds, 1),
                            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        write_exports(run_dir)
    return summary


def _config_body(config: Config, data: DataSource, units: list[Unit]) -> dict[str, Any]:
    """RUN_DIR/config.json: the run's identity and settings, and what the report needs to read it."""
    import torch

    from xcnn import __version__

    return {"identity": config.identity(_digest(data)), "config": config.to_dict(), "source": config.source,
            "xcnn": __version__, "torch": torch.__version__, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            # what a report of a killed run counts its "N of M units done" against
            "record_units": sum(1 for _, _, b in units if not isinstance(b, CheckJob)),
            # how the report (torch-free, without the plugins) names, orders and draws them
            "registry": registry.describe(config.run.methods),
            "plugins": dict(config.plugins)}


def _open_units(config: Config, store: RunStore, units: list[Unit], summary: Summary) -> set[UnitKey]:
    """The units still to run; gives up (in failures.jsonl) those killed twice, and counts in
    ``summary`` the units done before and the ones given up."""
    # A filtered unit is done: it is started again (and may be killed) only with its batch.
    filtered = store.filtered_units
    unfinished = [(k, x) for k, x, b in units
                  if k not in filtered and missing(config, b, x, store.records.done, store.check_groups)]
    # A unit killed twice (out of memory, most likely) is given up until --retry-killed, or it
    # would kill every rerun; a check unit's row names its check ("dog#randomisation").
    store.open_failures(keep=[_killed_row(k, x) for k, x in unfinished if store.starts[k] >= 2])
    closed = store.failed
    summary.failures.update(KILLED for _ in closed)
    todo = [k for k, _ in unfinished if k not in closed]
    summary.units_done_before = len(units) - len(todo)
    return set(todo)


def _killed_row(key: UnitKey, sample: Any) -> dict[str, Any]:
    return {"CNN": key[0], "size": key[1], "id": sample.image_id, "class": key[3], "file": Path(sample.file).name,
            "reason": f"{KILLED} (out of memory?); lower run.max_pixels or batch_size, "
                      "then rerun with --retry-killed"}


# --- set-up -----------------------------------------------------------------------------

def _dataset(config: Config, run_dir: Path) -> DataSource:
    """The config's dataset, not yet read (the demo set is built here: it is COCO-format)."""
    from xcnn.data.formats import FORMATS

    if config.data.demo:
        from xcnn.data import demo

        ann_file, image_dir = demo.build(Path(config.data.demo_dir) if config.data.demo_dir else run_dir / DEMO_DIR)
        return DataSource("coco", {"ann_file": str(ann_file), "image_dir": str(image_dir)})
    paths = {k: getattr(config.data, k) for k in FORMATS[config.data.format] if getattr(config.data, k) is not None}
    return DataSource(config.data.format, paths)


def _digest(data: DataSource) -> str:
    """The dataset's identity: the content of its annotations (which name every photo), not
    their path, so a moved data folder still resumes and an edited one does not."""
    return data.digest()


def _select(config: Config, data: DataSource) -> tuple[list[Any], dict[str, int]]:
    wanted = config.data.images_per_category or ALL_PHOTOS
    samples, skipped = data.open().select(list(config.data.categories), wanted, config.data.seed,
                                          config.data.min_area, max_pixels=config.run.max_pixels)
    if not samples:
        raise XcnnError(
            f"no usable image for {', '.join(config.data.categories)} in {data.where} "
            f"(skipped: {dict(skipped) or 'none found'}); check the categories and data.min_area"
        )
    per = Counter(s.category for s in samples)
    short = {c: per[c] for c in config.data.categories if per[c] < wanted} if config.data.images_per_category else {}
    # A set smaller than asked is the data, not a fault: the demo asks 2 of categories that have 1.
    log.info("selected %d (photo, category) pairs from %d photos, %s per category%s; skipped: %s",
             len(samples), len({str(s.image_id) for s in samples}),
             f"up to {wanted}" if config.data.images_per_category else "every usable photo",
             f" (fewer usable: {', '.join(f'{c} {n}' for c, n in short.items())})" if short else "",
             dict(skipped) or "none")
    return samples, skipped


def _check_data_paths(config: Config) -> None:
    """Cheap checks first: a missing dataset should not wait for every model to load."""
    if config.data.demo:
        return
    hint = "fix the path in the config" + (", or fetch the data with 'xcnn data coco'" if config.data.format == "coco" else "")
    if config.data.format == "coco" and not Path(str(config.data.ann_file)).is_file():
        raise XcnnError(f"data.ann_file: {config.data.ann_file} not found; {hint} ({config.source})")
    for key in ("image_dir", "root", "box_dir"):
        value = getattr(config.data, key)
        if value is not None and not Path(value).is_dir():
            raise XcnnError(f"data.{key}: {value} is not a folder; {hint} ({config.source})")
    if config.data.format == "folder" and not (Path(str(config.data.root)) / CSV_NAME).is_file():
        raise XcnnError(f"data.root: {config.data.root} holds no {CSV_NAME}; write it (columns image, mask, category) "
                        f"or fix the path ({config.source})")


def resolve_device(name: str) -> Any:
    """A torch device from "auto", "cpu", "cuda[:N]" or "mps"; one line if it is not here."""
    import torch

    from xcnn.devices import check_device

    check_device(name)

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


def _log_summary(s: Summary) -> None:
    failed = dict(s.failures) or "none"
    log.info(
        "%d records and %d check rows written in %.1f s; units: %d total, %d already done, %d failed (%s); "
        "images skipped by the selection: %s",
        s.records, s.check_rows, s.seconds, s.units_total, s.units_done_before, s.failed, failed, s.skipped_images or "none",
    )
    if s.workers:
        log.info("per worker: %s", ", ".join(f"{w} {r:.2f} units/s" for w, r in sorted(s.workers.items())))
