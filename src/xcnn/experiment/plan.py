"""The units of work still to do.

A unit is (model, size, photo, category): the store's key. Units travel in batches of equal
input size, and the batches are fixed by the config and the photo list alone, never by what is
already done, so a resumed run feeds the model exactly the batches an uninterrupted one does and
gets bit-for-bit the same numbers.

The checks add units of their own ([checks] in the config, never part of the identity):

- baselines: units of the pseudo model ``none`` (``BASELINE_MODEL``), whose "methods" are the
  model-free baselines; their records are keyed like any other.
- faithfulness: no new units; a method unit at a faithfulness size is also wanted while its
  deletion / insertion rows are missing (the worker then recomputes its maps; the store keeps
  records it already has).
- randomisation and dependence: one *check batch* per (model, check) at the first resized size,
  holding the first N (photo, category) pairs; its unit keys are the photo's with the category
  written "<category>#<check>", so they never meet a record unit's.

With run.max_target_rank, batches stay whole: the worker reads each unit's rank from the batch's
forward pass and reports the units it filters, which the store keeps as done (filtered.jsonl).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from xcnn.experiment.config import Config, ModelSpec, Size
from xcnn.experiment.store import CheckKey, UnitKey
from xcnn.methods.registry import BASELINE_NAMES

log = logging.getLogger(__name__)

BASELINE_MODEL = ModelSpec("none")  # the pseudo model of the baselines: no network, no identity
CHECKS = ("randomisation", "dependence")
FAITHFULNESS_TESTS = ("deletion", "insertion")


@dataclass(frozen=True)
class Batch:
    """Units of one model at one input size; ``methods`` are the ones some unit still lacks.
    ``check``: None for record units, else the check batch's kind (randomisation, dependence)."""

    model: ModelSpec
    size: Size
    samples: tuple[Any, ...]  # xcnn.data.Sample, each with its undilated mask
    methods: tuple[str, ...]
    photos: dict[str, bytes] = field(default_factory=dict, compare=False)  # file -> bytes, when shipped
    check: str | None = None
    faithful: frozenset[str] = frozenset()  # pair keys (pair_key) whose deletion/insertion rows are wanted

    def key(self, sample: Any) -> UnitKey:
        return unit_key(self.model, self.size, sample, self.check)

    def keys(self) -> list[UnitKey]:
        return [self.key(s) for s in self.samples]


def unit_key(spec: ModelSpec, size: Size, sample: Any, check: str | None = None) -> UnitKey:
    category = sample.category if check is None else f"{sample.category}#{check}"
    return (spec.name, size.label, str(sample.image_id), category)


def pair_key(sample: Any) -> str:
    """A (photo, category) pair as the checks name it (also the seed key of their randomness)."""
    return f"{sample.image_id}|{sample.category}"


def models(config: Config) -> list[ModelSpec]:
    """The config's models, then the baselines' pseudo model when the baselines are on."""
    return [*config.models, *([BASELINE_MODEL] if config.checks.baselines else [])]


def methods_of(config: Config, spec: ModelSpec) -> tuple[str, ...]:
    return BASELINE_NAMES if spec == BASELINE_MODEL else config.methods


def missing(config: Config, batch: Batch, sample: Any, done: set[Any], checks_done: set[Any]) -> list[str]:
    """The methods whose records or check rows for this unit of ``batch`` are not yet done."""
    key = unit_key(batch.model, batch.size, sample)
    base = (batch.model.name, batch.size.label, str(sample.image_id), sample.category)
    c = config.checks
    want = []
    for m in methods_of(config, batch.model):
        if batch.check is None:
            lacks = (*key, m) not in done
            if not lacks and pair_key(sample) in batch.faithful:
                lacks = any(CheckKey(base, m, t, "auc", None, c.faithfulness_steps, c.seed) not in checks_done
                            for t in FAITHFULNESS_TESTS)
        # A check batch writes each photo's rows as one group: one row stands for all of them.
        elif batch.check == "randomisation":
            lacks = CheckKey(base, m, "randomisation", "ssim", 1, c.randomisation_steps, c.seed) not in checks_done
        else:
            lacks = CheckKey(base, m, "class", "ssim", None, None, c.seed) not in checks_done
        if lacks:
            want.append(m)
    return want


def all_batches(config: Config, samples: Sequence[Any]) -> list[Batch]:
    """Every batch of the config, done or not, in the order they run: model by model (so a
    worker loads each model once), each model's check batches after its record batches."""
    batches = []
    check_size = config.check_size()
    n = config.checks.faithfulness_photos
    eligible = {pair_key(s) for s in (samples[:n] if n else samples)}
    for spec in models(config):
        methods = methods_of(config, spec)
        for size in config.sizes:
            faithful = spec != BASELINE_MODEL and size in config.faithfulness_sizes()
            for group in _groups(samples, size, config.batch_size):
                wanted = frozenset(pair_key(s) for s in group if pair_key(s) in eligible) if faithful else frozenset()
                batches.append(Batch(spec, size, tuple(group), methods, faithful=wanted))
        if spec == BASELINE_MODEL or check_size is None:
            continue
        for check, on, n in (("randomisation", config.checks.randomisation, config.checks.randomisation_photos),
                             ("dependence", config.checks.dependence, config.checks.dependence_photos)):
            if on:
                batches.append(Batch(spec, check_size, tuple(samples[:n]), methods, check=check))
    return batches


def plan(config: Config, samples: Sequence[Any], done: set[Any], closed: set[UnitKey],
         checks_done: set[Any] = frozenset(), filtered: set[UnitKey] = frozenset()) -> list[Batch]:  # type: ignore[assignment]
    """Every batch that holds a unit with a method whose records (or check rows) are not yet
    done; ``closed`` units (failed for good, or killed twice: a check batch with one is skipped
    whole) and ``filtered`` units (record or check units whose target ranked over
    run.max_target_rank) count as done. A
    record batch keeps only the methods some unit lacks; a check batch is run whole or not at
    all (its photos depend on each other). A batch keeps its filtered units: the worker finds
    them again from the same forward pass, so the kept ones are explained in the same company."""
    if (config.checks.randomisation or config.checks.dependence) and config.check_size() is None:
        log.info("checks: randomisation and dependence need a resized size in run.sizes; skipped")
    out = []
    for batch in all_batches(config, samples):
        if batch.check is not None and any(batch.key(s) in closed for s in batch.samples):
            continue  # a check batch killed twice is given up whole, like its units
        lacking: set[str] = set()
        for s in batch.samples:
            key = batch.key(s)
            if key not in filtered and key not in closed:
                lacking.update(missing(config, batch, s, done, checks_done))
        if lacking:
            keep = batch.methods if batch.check else tuple(m for m in batch.methods if m in lacking)
            out.append(replace(batch, methods=keep))
    return out


def _groups(samples: Sequence[Any], size: Size, batch_size: int) -> Iterator[list[Any]]:
    """Batches of equal input size, in an order fixed by the sample list alone."""
    def shape(s: Any) -> tuple[int, ...]:
        return size.hw if size.hw is not None else tuple(s.mask.shape)
    groups: dict[tuple[int, ...], list[Any]] = {}
    for s in samples:
        groups.setdefault(shape(s), []).append(s)
    for group in groups.values():
        for i in range(0, len(group), batch_size):
            yield group[i:i + batch_size]
