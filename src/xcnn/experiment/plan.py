"""The units of work still to do.

A unit is (model, size, photo, category): the store's key. Units travel in batches of equal
input size (jobs, xcnn.experiment.jobs), and the batches are fixed by the config and the photo
list alone, never by what is already done, so a resumed run feeds the model exactly the batches an uninterrupted one does and
gets bit-for-bit the same numbers.

The checks add units of their own ([checks] in the config, never part of the identity):

- baselines: units of the pseudo model ``none`` (``BASELINE_MODEL``, in ``BaselineJob``s), whose
  "methods" are the model-free baselines; their records are keyed like any other.
- "maps"-scope checks (deletion / insertion, and the registry's others): no new units; a method
  unit at a faithfulness size is also wanted while one of their rows is missing (the worker then
  recomputes its maps; the store keeps records it already has).
- "photos"-scope checks (randomisation, dependence, ...): one ``CheckJob`` per (model, check)
  at the first resized size, holding the first N (photo, category) pairs; its unit keys are the
  photo's with the category written "<category>#<check>", so they never meet a record unit's.

Which rows are done is asked per (unit, method, check, parameters): ``runfolder.jsonl.CheckGroup``.

With run.max_target_rank, batches stay whole: the worker reads each unit's rank from the batch's
forward pass and reports the units it filters, which the store keeps as done (filtered.jsonl).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from xcnn import registry
from xcnn.experiment.config import DEFAULT_CHECK_PHOTOS, Config, ModelSpec, Size
from xcnn.experiment.jobs import BaselineJob, CheckJob, Job, RecordJob, pair_key
from xcnn.runfolder.jsonl import CheckGroup
from xcnn.methods.registry import BASELINE_NAMES
from xcnn.runfolder.records import RecordKey, UnitKey

if TYPE_CHECKING:
    from xcnn.data.dataset import Sample

log = logging.getLogger(__name__)

BASELINE_MODEL = ModelSpec("none")  # the pseudo model of the baselines: no network, no identity
Batch = Job  # the name the backends know a job by

__all__ = ["BASELINE_MODEL", "Batch", "BaselineJob", "CheckJob", "Job", "RecordJob", "all_batches", "missing",
           "pair_key", "plan"]


def models(config: Config) -> list[ModelSpec]:
    """The config's models, then the baselines' pseudo model when the baselines are on."""
    return [*config.models, *([BASELINE_MODEL] if config.checks.baselines else [])]


def methods_of(config: Config, spec: ModelSpec) -> tuple[str, ...]:
    return BASELINE_NAMES if spec == BASELINE_MODEL else config.run.methods


def check_group(config: Config, base: UnitKey, method: str, check: str, params: object) -> CheckGroup:
    """The group of rows one check writes for one unit and method, with the run's parameters."""
    steps, hashed = registry.check_identity(params)
    return CheckGroup(base, method, check, steps, config.checks.seed, hashed)


def missing(config: Config, batch: Job, sample: Sample, done: set[RecordKey],
            checks_done: set[CheckGroup]) -> list[str]:
    """The methods whose records or check rows for this unit of ``batch`` are not yet done."""
    return [m for m in methods_of(config, batch.model) if lacking_checks(config, batch, sample, m, checks_done)
            or (not isinstance(batch, CheckJob) and (*batch.key(sample), m) not in done)]


def lacking_checks(config: Config, batch: Job, sample: Sample, method: str, checks_done: set[CheckGroup]) -> list[str]:
    """The checks whose rows for this unit and method are missing: a check job's own check, or,
    in a record job, the "maps"-scope ones when the pair is one they run on."""
    base = (batch.model.name, batch.size.label, str(sample.image_id), sample.category)
    if isinstance(batch, CheckJob):
        params = dict(config.checks.enabled()).get(batch.check)
        return [batch.check] if check_group(config, base, method, batch.check, params) not in checks_done else []
    if isinstance(batch, BaselineJob):
        return []
    pairs = dict(batch.checks)
    return [name for name, params in config.checks.scoped("maps")
            if pair_key(sample) in pairs.get(name, ()) and check_group(config, base, method, name, params) not in checks_done]


def all_batches(config: Config, samples: Sequence[Sample]) -> list[Job]:
    """Every job of the config, done or not, in the order they run: model by model (so a
    worker loads each model once), each model's check jobs after its record jobs."""
    batches: list[Job] = []
    check_size = config.check_size()
    n = config.checks.faithfulness_photos
    eligible = {pair_key(s) for s in (samples[:n] if n else samples)}
    on_maps = {}  # each "maps"-scope check's pairs: the first faithfulness_photos, or its own fewer
    for name, params in config.checks.scoped("maps"):
        own = getattr(params, "photos", None)
        on_maps[name] = eligible & {pair_key(s) for s in samples[:own]} if own else eligible
    for spec in models(config):
        methods = methods_of(config, spec)
        for size in config.run.sizes:
            faithful = spec != BASELINE_MODEL and size in config.faithfulness_sizes()
            for group in _groups(samples, size, config.run.batch_size):
                if spec == BASELINE_MODEL:
                    batches.append(BaselineJob(spec, size, tuple(group), methods))
                    continue
                wanted = frozenset(pair_key(s) for s in group if pair_key(s) in eligible) if faithful else frozenset()
                checks = tuple((name, frozenset(wanted & pairs)) for name, pairs in on_maps.items() if wanted & pairs)
                batches.append(RecordJob(spec, size, tuple(group), methods, faithful=wanted, checks=checks))
        if spec == BASELINE_MODEL or check_size is None:
            continue
        for check, params in config.checks.scoped("photos"):
            photos = getattr(params, "photos", DEFAULT_CHECK_PHOTOS)
            batches.append(CheckJob(spec, check_size, tuple(samples[:photos]), methods, check=check))
    return batches


def plan(config: Config, samples: Sequence[Sample], done: set[RecordKey], closed: set[UnitKey],
         checks_done: set[CheckGroup] = frozenset(),  # type: ignore[assignment]
         filtered: set[UnitKey] = frozenset()) -> list[Job]:  # type: ignore[assignment]
    """Every job that holds a unit with a method whose records (or check rows) are not yet
    done; ``closed`` units (failed for good, or killed twice: a check job with one is skipped
    whole) and ``filtered`` units (record or check units whose target ranked over
    run.max_target_rank) count as done. A record job keeps only the methods some unit lacks
    and the "maps"-scope checks some pair lacks; a check job is run whole or not at all (its
    photos depend on each other). A job keeps its filtered units: the worker finds them again
    from the same forward pass, so the kept ones are explained in the same company."""
    if config.checks.scoped("photos") and config.check_size() is None:
        log.info("checks: randomisation and dependence need a resized size in run.sizes; skipped")
    out: list[Job] = []
    for batch in all_batches(config, samples):
        if isinstance(batch, CheckJob) and any(batch.key(s) in closed for s in batch.samples):
            continue  # a check job killed twice is given up whole, like its units
        lacking: set[str] = set()
        checks: set[str] = set()
        for s in batch.samples:
            if batch.key(s) not in filtered and batch.key(s) not in closed:
                lacking.update(missing(config, batch, s, done, checks_done))
                if isinstance(batch, RecordJob):
                    for m in batch.methods:
                        checks.update(lacking_checks(config, batch, s, m, checks_done))
        if not lacking:
            continue
        if isinstance(batch, CheckJob):
            out.append(batch)
        elif isinstance(batch, RecordJob):
            out.append(replace(batch, methods=tuple(m for m in batch.methods if m in lacking),
                               checks=tuple(c for c in batch.checks if c[0] in checks)))
        else:
            out.append(replace(batch, methods=tuple(m for m in batch.methods if m in lacking)))
    return out


def _groups(samples: Sequence[Sample], size: Size, batch_size: int) -> Iterator[list[Sample]]:
    """Batches of equal input size, in an order fixed by the sample list alone."""
    def shape(s: Sample) -> tuple[int, ...]:
        return size.hw if size.hw is not None else tuple(s.mask.shape)
    groups: dict[tuple[int, ...], list[Sample]] = {}
    for s in samples:
        groups.setdefault(shape(s), []).append(s)
    for group in groups.values():
        for i in range(0, len(group), batch_size):
            yield group[i:i + batch_size]
