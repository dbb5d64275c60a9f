"""The three kinds of work the planner hands a worker, each a type of its own.

All hold units of one model at one input size (``samples``) and the methods some unit lacks:

- ``BaselineJob``: the model-free baselines (pseudo model "none"): records, no network.
- ``RecordJob``: a model's records, and at a faithfulness size the rows of the "maps"-scope
  checks (``checks``: each with the pairs it runs on).
- ``CheckJob``: the rows of one "photos"-scope check; its unit keys write the category
  "<category>#<check>", so they never meet a record unit's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from xcnn.experiment.config import ModelSpec, Size
from xcnn.runfolder.records import UnitKey, UnitResult

if TYPE_CHECKING:
    from xcnn.data.dataset import Sample


def pair_key(sample: Sample) -> str:
    """A (photo, category) pair as the checks name it (also the seed key of their randomness)."""
    return f"{sample.image_id}|{sample.category}"


@dataclass(frozen=True)
class _Job:
    model: ModelSpec
    size: Size
    samples: tuple[Sample, ...]  # each with its undilated mask
    methods: tuple[str, ...]
    photos: dict[str, bytes] = field(default_factory=dict, compare=False, kw_only=True)  # file -> bytes, shipped

    def key(self, sample: Sample) -> UnitKey:
        return (self.model.name, self.size.label, str(sample.image_id), sample.category)

    def keys(self) -> list[UnitKey]:
        return [self.key(s) for s in self.samples]

    def failed(self, reason: str) -> list[UnitResult]:
        """Every unit of the job recorded as failed for ``reason``."""
        return [failure(self.key(s), s, reason) for s in self.samples]


@dataclass(frozen=True)
class BaselineJob(_Job):
    """Records of the model-free baselines for the photos."""


@dataclass(frozen=True)
class RecordJob(_Job):
    """Records of a model's methods; ``faithful``: the pairs (pair_key) whose "maps"-scope check
    rows are wanted, ``checks`` those checks, each with the pairs it runs on (its first
    ``photos`` pairs when its parameters say, within ``faithful``)."""

    faithful: frozenset[str] = frozenset()
    checks: tuple[tuple[str, frozenset[str]], ...] = ()


@dataclass(frozen=True)
class CheckJob(_Job):
    """Rows of the "photos"-scope check ``check``: run whole or not at all (its photos depend
    on each other)."""

    check: str = ""

    def key(self, sample: Sample) -> UnitKey:
        return (self.model.name, self.size.label, str(sample.image_id), f"{sample.category}#{self.check}")


Job = BaselineJob | RecordJob | CheckJob


def failure(key: UnitKey, sample: Sample, reason: str) -> UnitResult:
    """A unit recorded as failed (a data reason: the run goes on)."""
    return UnitResult(key, failure=reason, photo=(sample.image_id, Path(sample.file).name))
