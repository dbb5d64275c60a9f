"""The units of work still to do.

A unit is (model, size, photo, category): the store's key. Units travel in batches of equal
input size, and the batches are fixed by the config and the photo list alone, never by what is
already done, so a resumed run feeds the model exactly the batches an uninterrupted one does and
gets bit-for-bit the same numbers.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from xcnn.experiment.config import Config, ModelSpec, Size
from xcnn.experiment.store import RecordKey, UnitKey


@dataclass(frozen=True)
class Batch:
    """Units of one model at one input size; ``methods`` are the ones some unit still lacks."""

    model: ModelSpec
    size: Size
    samples: tuple[Any, ...]  # xcnn.data.Sample, each with its undilated mask
    methods: tuple[str, ...]
    photos: dict[str, bytes] = field(default_factory=dict, compare=False)  # file -> bytes, when shipped

    def keys(self) -> list[UnitKey]:
        return [unit_key(self.model, self.size, s) for s in self.samples]


def unit_key(spec: ModelSpec, size: Size, sample: Any) -> UnitKey:
    return (spec.name, size.label, str(sample.image_id), sample.category)


def plan(config: Config, samples: Sequence[Any], done: set[RecordKey], closed: set[UnitKey]) -> list[Batch]:
    """Every batch that holds a unit with a method not yet in ``done``; ``closed`` units (failed
    for good, or being given up) count as done. Ordered model by model, so a worker loads each
    model once."""
    batches = []
    for spec in config.models:
        for size in config.sizes:
            for group in _groups(samples, size, config.batch_size):
                missing: set[str] = set()
                for s in group:
                    key = unit_key(spec, size, s)
                    if key not in closed:
                        missing.update(m for m in config.methods if (*key, m) not in done)
                if missing:
                    batches.append(Batch(spec, size, tuple(group), tuple(m for m in config.methods if m in missing)))
    return batches


def _groups(samples: Sequence[Any], size: Size, batch_size: int) -> Iterator[list[Any]]:
    """Batches of equal input size, in an order fixed by the sample list alone."""
    shape: Callable[[Any], tuple[int, ...]] = lambda s: size.hw if size.hw is not None else tuple(s.mask.shape)
    groups: dict[tuple[int, ...], list[Any]] = {}
    for s in samples:
        groups.setdefault(shape(s), []).append(s)
    for group in groups.values():
        for i in range(0, len(group), batch_size):
            yield group[i:i + batch_size]
