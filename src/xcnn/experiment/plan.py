"""The units of work still to do.

A unit is (model, size, photo, category): the store's key. Units travel in batches of equal
input size, and the batches are fixed by the config and the photo list alone, never by what is
already done, so a resumed run feeds the model exactly the batches an uninterrupted one does and
gets bit-for-bit the same numbers.

The checks add units of their own ([checks] in the config, never part of the identity):

- baselines: units of the pseudo model ``none`` (``BASELINE_MODEL``), whose "methods" are the
  model-free baselines; their records are keyed like any other.
- "maps"-scope checks (deletion / insertion, and the registry's others): no new units; a method
  unit at a faithfulness size is also wanted while one of their rows is missing (the worker then
  recomputes its maps; the store keeps records it already has).
- "photos"-scope checks (randomisation, dependence, ...): one *check batch* per (model, check)
  at the first resized size, holding the first N (photo, category) pairs; its unit keys are the
  photo's with the category written "<category>#<check>", so they never meet a record unit's.

Which rows are done is asked per (unit, method, check, parameters): ``store.CheckGroup``.

With run.max_target_rank, batches stay whole: the worker reads each unit's rank from the batch's
forward pass and reports the units it filters, which the store keeps as done (filtered.jsonl).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from xcnn import registry
from xcnn.experiment.config import DEFAULT_CHECK_PHOTOS, Config, ModelSpec, Size
from xcnn.experiment.store import CheckGroup, UnitKey
from xcnn.methods.registry import BASELINE_NAMES

log = logging.getLogger(__name__)

BASELINE_MODEL = ModelSpec("none")  # the pseudo model of the baselines: no network, no identity


@dataclass(frozen=True)
class Batch:
    """Units of one model at one input size; ``methods`` are the ones some unit still lacks.
    ``check``: None for record units, else the name of the "photos"-scope check the batch is for.
    ``faithful``: the pairs whose "maps"-scope check rows are wanted, ``checks`` those checks."""

    model: ModelSpec
    size: Size
    samples: tuple[Any, ...]  # xcnn.data.Sample, each with its undilated mask
    methods: tuple[str, ...]
    photos: dict[str, bytes] = field(default_factory=dict, compare=False)  # file -> bytes, when shipped
    check: str | None = None
    faithful: frozenset[str] = frozenset()  # pair keys (pair_key) whose "maps"-scope check rows are wanted
    # the "maps"-scope checks some pair lacks, each with the pairs it runs on (its first
    # ``photos`` pairs when its parameters say, within ``faithful``)
    checks: tuple[tuple[str, frozenset[str]], ...] = ()

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


def check_group(config: Config, base: UnitKey, method: str, check: str, params: Any) -> CheckGroup:
    """The group of rows one check writes for one unit and method, with the run's parameters."""
    steps, hashed = registry.check_identity(params)
    return CheckGroup(base, method, check, steps, config.checks.seed, hashed)


def missing(config: Config, batch: Batch, sample: Any, done: set[Any], checks_done: set[CheckGroup]) -> list[str]:
    """The methods whose records or check rows for this unit of ``batch`` are not yet done."""
    return [m for m in methods_of(config, batch.model) if lacking_checks(config, batch, sample, m, done, checks_done)
            or (batch.check is None and (*unit_key(batch.model, batch.size, sample), m) not in done)]


def lacking_checks(config: Config, batch: Batch, sample: Any, method: str, done: set[Any],
                   checks_done: set[CheckGroup]) -> list[str]:
    """The checks whose rows for this unit and method are missing: the batch's own check, or, in
    a record batch, the "maps"-scope ones when the pair is one they run on."""
    base = (batch.model.name, batch.size.label, str(sample.image_id), sample.category)
    if batch.check is not None:
        params = dict(config.checks.enabled()).get(batch.check)
        return [batch.check] if check_group(config, base, method, batch.check, params) not in checks_done else []
    pairs = dict(batch.checks)
    return [name for name, params in config.checks.scoped("maps")
            if pair_key(sample) in pairs.get(name, ()) and check_group(config, base, method, name, params) not in checks_done]


def all_batches(config: Config, samples: Sequence[Any]) -> list[Batch]:
    """Every batch of the config, done or not, in the order they run: model by model (so a
    worker loads each model once), each model's check batches after its record batches."""
    batches = []
    check_size = config.check_size()
    n = config.checks.faithfulness_photos
    eligible = {pair_key(s) for s in (samples[:n] if n else samples)}
    on_maps = {}  # each "maps"-scope check's pairs: the first faithfulness_photos, or its own fewer
    for name, params in config.checks.scoped("maps"):
        own = getattr(params, "photos", None)
        on_maps[name] = eligible & {pair_key(s) for s in samples[:own]} if own else eligible
    for spec in models(config):
        methods = methods_of(config, spec)
        for size in config.sizes:
            faithful = spec != BASELINE_MODEL and size in config.faithfulness_sizes()
            for group in _groups(samples, size, config.batch_size):
                wanted = frozenset(pair_key(s) for s in group if pair_key(s) in eligible) if faithful else frozenset()
                checks = tuple((name, frozenset(wanted & pairs)) for name, pairs in on_maps.items() if wanted & pairs)
                batches.append(Batch(spec, size, tuple(group), methods, faithful=wanted, checks=checks))
        if spec == BASELINE_MODEL or check_size is None:
            continue
        for check, params in config.checks.scoped("photos"):
            photos = getattr(params, "photos", DEFAULT_CHECK_PHOTOS)
            batches.append(Batch(spec, check_size, tuple(samples[:photos]), methods, check=check))
    return batches


def plan(config: Config, samples: Sequence[Any], done: set[Any], closed: set[UnitKey],
         checks_done: set[CheckGroup] = frozenset(), filtered: set[UnitKey] = frozenset()) -> list[Batch]:  # type: ignore[assignment]
    """Every batch that holds a unit with a method whose records (or check rows) are not yet
    done; ``closed`` units (failed for good, or killed twice: a check batch with one is skipped
    whole) and ``filtered`` units (record or check units whose target ranked over
    run.max_target_rank) count as done. A record batch keeps only the methods some unit lacks
    and the "maps"-scope checks some pair lacks; a check batch is run whole or not at all (its
    photos depend on each other). A batch keeps its filtered units: the worker finds them again
    from the same forward pass, so the kept ones are explained in the same company."""
    if config.checks.scoped("photos") and config.check_size() is None:
        log.info("checks: randomisation and dependence need a resized size in run.sizes; skipped")
    out = []
    for batch in all_batches(config, samples):
        if batch.check is not None and any(batch.key(s) in closed for s in batch.samples):
            continue  # a check batch killed twice is given up whole, like its units
        lacking: set[str] = set()
        checks: set[str] = set()
        for s in batch.samples:
            key = batch.key(s)
            if key not in filtered and key not in closed:
                lacking.update(missing(config, batch, s, done, checks_done))
                if batch.check is None:
                    for m in batch.methods:
                        checks.update(lacking_checks(config, batch, s, m, done, checks_done))
        if lacking:
            keep = batch.methods if batch.check else tuple(m for m in batch.methods if m in lacking)
            out.append(replace(batch, methods=keep, checks=tuple(c for c in batch.checks if c[0] in checks)))
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
