"""Model checks: what a check function gets (``CheckContext``), and the three built-in checks.

A check is registered with ``@xcnn.check`` (``xcnn.registry.model_check``) and returns
``xcnn.CheckRow`` values; the worker turns them into rows of RUN_DIR/checks.jsonl (adding the
unit, the check's name, its parameters' identity and the seed). The built-ins below use the same
decorator and context as a plugin's check (docs/PLUGINS.md):

- ``faithfulness``: deletion and insertion curves and their AUCs (``faithfulness.deletion_insertion``);
- ``randomisation``: cascading model randomisation, the map of every step against the trained one;
- ``dependence``: input dependence (another photo's map for the same class) and class dependence
  (the same photo's map for another class).

The last two compare maps by Spearman and SSIM (``sanity.similarity``). docs/METHOD.md §6.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from xcnn.errors import XcnnError
from xcnn.methods.passes import Tally
from xcnn.metrics import sanity
from xcnn.metrics.faithfulness import CurveSettings, deletion_insertion
from xcnn.registry import CheckRow, Score, model_check

log = logging.getLogger(__name__)

# (images, targets, keys, model or None: the run's own) -> the run's maps, method -> B×C×H×W
ExplainFn = Callable[[torch.Tensor, torch.Tensor, Sequence[str], "nn.Module | None"], dict[str, np.ndarray]]


@dataclass
class CheckContext:
    """What a model check reads: one batch of (photo, category) pairs of one model at one size,
    the run's maps of them, and ``explain`` / ``run`` to make more."""

    model: nn.Module  # in eval mode; never modify it (deep-copy first, as randomisation does)
    images: torch.Tensor  # B×3×H×W in the model's input space
    targets: torch.Tensor  # LongTensor[B], the records' targets
    keys: Sequence[str]  # one per pair, "photo id|category": seeds per-photo randomness
    methods: tuple[str, ...]  # the run's methods (or the ones whose rows are missing)
    maps: dict[str, np.ndarray]  # method -> B×C×H×W float32, the maps of images for targets
    masks: np.ndarray  # B×H×W bool, the dilated masks at this size
    photos: np.ndarray  # B×H×W×3 uint8 at this size
    params: Any = None  # the check's parameters (its dataclass), or None
    seed: int = 0  # [checks] seed
    classes: int = 0  # how many classes the model has
    own_classes: Sequence[Sequence[int]] = ()  # per pair, the classes its category stands for (targets rule)
    memory_mb: int = 4096
    explain_fn: ExplainFn | None = field(default=None, repr=False)

    def explain(self, images: torch.Tensor, targets: torch.Tensor, keys: Sequence[str] | None = None,
                model: nn.Module | None = None) -> dict[str, np.ndarray]:
        """The run's methods' maps (with the run's parameters and layer) of ``images`` for
        ``targets``; ``model``: another model of the same architecture (a randomised copy)."""
        if self.explain_fn is None:
            raise XcnnError("this check context cannot compute maps (no explain function given)")
        return self.explain_fn(images, targets, list(self.keys if keys is None else keys), model)

    def run(self, inputs: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        """Logits of N inputs without gradients, in chunks that fit ``memory_mb``."""
        from xcnn.methods.sampling import run_chunked

        return run_chunked(self.model if model is None else model, inputs, self.images[:1], self.memory_mb)


def whole_number(value: Any, what: str, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{what} must be a whole number >= {least}, got {value!r}")


# --- faithfulness: deletion and insertion -------------------------------------------------

@dataclass(frozen=True)
class FaithfulnessParams:
    steps: int = field(default=20, metadata={"help": "points per curve, besides the start (each costs a pass per map)"})

    def __post_init__(self) -> None:
        whole_number(self.steps, "faithfulness steps", 1)


@model_check("faithfulness", label="Deletion / insertion", category="faithfulness", paper="Petsiuk et al. 2018",
             params=FaithfulnessParams,
             scores=(Score("deletion", "auc", "Deletion AUC (lower is better)", higher_is_better=False),
                     Score("insertion", "auc", "Insertion AUC (higher is better)")))
def faithfulness(ctx: CheckContext) -> Iterator[CheckRow]:
    """Deletion and insertion: the AUC (step null) and the curve's points (step k, measure prob)."""
    steps = (ctx.params or FaithfulnessParams()).steps
    # all methods in one call: they share each photo's end points and, where two maps order
    # the pixels alike, their curves
    curves = deletion_insertion(ctx.model, ctx.images, {m: ctx.maps[m] for m in ctx.methods}, ctx.targets,
                                list(ctx.keys), CurveSettings(steps=steps, seed=ctx.seed))
    for m in ctx.methods:
        r = curves[m]
        for i in range(len(ctx.keys)):
            for test in ("deletion", "insertion"):
                yield CheckRow(i, m, test, "auc", float(r[f"{test}_auc"][i]))
                for k, p in enumerate(r[f"{test}_curve"][i]):
                    yield CheckRow(i, m, test, "prob", float(p), k)


# --- randomisation and dependence: similarities ---------------------------------------------

def _similarities(ctx: CheckContext, test: str, step: int | None, maps: dict[str, np.ndarray],
                  ranked: dict[str, np.ndarray]) -> Iterator[CheckRow]:
    for m in ctx.methods:
        sim = sanity.similarity(ctx.maps[m], maps[m], ranked[m])
        for i in range(len(ctx.keys)):
            for measure in ("spearman", "ssim"):
                yield CheckRow(i, m, test, measure, float(sim[measure][i]), step)


@dataclass(frozen=True)
class RandomisationParams:
    steps: int = field(default=5, metadata={"help": "groups of layers re-initialised, from the output down"})
    photos: int = field(default=4, metadata={"help": "on the first N photos"})

    def __post_init__(self) -> None:
        whole_number(self.steps, "randomisation steps", 1)
        whole_number(self.photos, "randomisation photos", 1)


@model_check("randomisation", label="Cascading randomisation", category="randomisation", paper="Adebayo et al. 2018",
             scope="photos", params=RandomisationParams,
             scores=(Score("randomisation", "spearman", "Similarity after full randomisation", higher_is_better=False,
                           last_step=True),))
def randomisation(ctx: CheckContext) -> Iterator[CheckRow]:
    """The map of each randomised copy of the model against the trained model's (step 1..steps)."""
    p = ctx.params or RandomisationParams()
    ranked = {m: sanity.ranks(ctx.maps[m]) for m in ctx.methods}  # each trained map is compared many times
    # one group of modules a step, fewer steps when fewer modules own parameters
    tally = Tally("randomisation steps", min(p.steps, len(sanity.parameterised_modules(ctx.model))))
    for step, _, model in sanity.cascade(ctx.model, ctx.images[:1], p.steps, ctx.seed):
        yield from _similarities(ctx, "randomisation", step, ctx.explain(ctx.images, ctx.targets, model=model), ranked)
        tally.add()


@dataclass(frozen=True)
class DependenceParams:
    photos: int = field(default=8, metadata={"help": "on the first N photos"})

    def __post_init__(self) -> None:
        whole_number(self.photos, "dependence photos", 1)


@model_check("dependence", label="Input and class dependence", category="randomisation", paper="Adebayo et al. 2018",
             scope="photos", params=DependenceParams,
             scores=(Score("input", "spearman", "Input dependence", higher_is_better=False),
                     Score("class", "spearman", "Class dependence", higher_is_better=False)))
def dependence(ctx: CheckContext) -> Iterator[CheckRow]:
    """Input dependence (photo j's map for photo i's target against photo i's map) and class
    dependence (photo i's map for another class against its map)."""
    ranked = {m: sanity.ranks(ctx.maps[m]) for m in ctx.methods}
    n = len(ctx.keys)
    tally = Tally("dependence checks", 2)
    if n >= 2:
        j = sanity.cyclic_partners(n)
        yield from _similarities(ctx, "input", None, ctx.explain(ctx.images[torch.as_tensor(j)], ctx.targets,
                                                                 [ctx.keys[k] for k in j]), ranked)
    else:
        log.info("input dependence needs 2 photos, got %d; skipped", n)
    tally.add()
    other = torch.tensor([sanity.other_class(ctx.classes, set(o), ctx.seed, k)
                          for o, k in zip(ctx.own_classes, ctx.keys)])
    yield from _similarities(ctx, "class", None, ctx.explain(ctx.images, other), ranked)
    tally.add()
