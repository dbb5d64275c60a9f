"""The worker's one engine call: a batch of units in, each unit's maps and target out (``Explained``).

Typed values instead of a dict of magic keys: ``Explained`` is what the records read of a unit's
explanation, and the baselines (no model) fill the same type with no target.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from xcnn.data.dataset import Sample
from xcnn.engine import Explainer, Maps
from xcnn.experiment.config import ModelSpec
from xcnn.experiment.jobs import pair_key
from xcnn.experiment.targets import TargetMap, classes_for
from xcnn.methods import registry
from xcnn.models import LoadedModel


@dataclass
class Unit:
    """A unit ready for the model: its photo and dilated mask at the job's input size."""

    sample: Sample
    photo: np.ndarray  # H×W×3 uint8 at the input size
    mask: np.ndarray  # bool H×W, dilated, at the input size


@dataclass(frozen=True)
class Targets:
    """How a unit's target class is chosen ([data] targets, target map; [run] max_target_rank)."""

    rule: str
    target_map: TargetMap = ()
    max_rank: int | None = None  # None: every unit; K: only units whose target ranks 1..K

    def classes(self, category: str, lm: LoadedModel) -> list[int]:
        return classes_for(self.rule, self.target_map, category, lm.categories, lm.wnids)


@dataclass(frozen=True)
class EngineParams:
    """What the engine takes besides a batch: the methods' parameters, the working memory."""

    params: Mapping[str, object] = field(default_factory=dict)  # method -> its parameter dataclass
    memory_mb: int = 4096

    def kwargs(self, methods: Sequence[str], keys: list[str]) -> dict[str, object]:
        """The engine's keyword arguments for ``methods`` on photos named ``keys`` (SmoothGrad
        seeds its noise by key); none where no method makes extra passes."""
        if not any(registry.get(m).extra_passes for m in methods):
            return {}
        return {"params": {m: p for m, p in self.params.items() if m in methods}, "memory_mb": self.memory_mb,
                "keys": keys}


@dataclass
class Explained:
    """One unit's explanation: maps (float32 NumPy, nothing left on the device) and its target."""

    maps: dict[str, np.ndarray]  # method -> C×H×W; empty for a filtered unit
    ms: Mapping[str, float]  # method -> milliseconds per map
    target: int | None = None  # None: a baseline, which has no model
    target_rank: int | None = None
    target_prob: float | None = None
    top1: int | None = None
    target_rule: str | None = None
    rectifiers: int | None = None
    layer: str | None = None  # the CAM layer read
    extras: dict[str, float] = field(default_factory=dict)  # "method.field" -> a method's own number
    filtered: bool = False  # the target ranked over max_target_rank: no maps


def model_input(lm: LoadedModel, units: Sequence[Unit], device: torch.device) -> torch.Tensor:
    """The units' photos as the model's normalised B×3×H×W input."""
    x = torch.from_numpy(np.stack([u.photo for u in units])).to(device)
    return lm.normalize(x.permute(0, 3, 1, 2).float() / 255.0)


def maps_of(ex: Explainer, engine: EngineParams, methods: Sequence[str]) -> Callable[..., dict[str, np.ndarray]]:
    """The checks' explain function: ``methods``' maps of x for targets, as float32 NumPy."""
    def explain(x: torch.Tensor, targets: torch.Tensor, keys: list[str]) -> dict[str, np.ndarray]:
        out = ex.explain(x, targets=targets, methods=list(methods), **engine.kwargs(methods, keys))  # type: ignore[arg-type]
        return {m: out.get(m).detach().float().cpu().numpy() for m in methods}
    return explain


def explain_units(ex: Explainer, lm: LoadedModel, units: list[Unit], methods: Sequence[str],
                  choose: Targets, engine: EngineParams) -> list[Explained]:
    """One engine call for ``units``: per unit its maps, target, rank and probability. A unit
    whose target ranks over ``choose.max_rank`` comes back filtered, with no maps."""
    x = model_input(lm, units, next(lm.model.parameters()).device)
    allowed = torch.zeros(len(units), len(lm.categories), dtype=torch.bool)
    for i, u in enumerate(units):
        allowed[i, choose.classes(u.sample.category, lm)] = True

    def pick(logits: torch.Tensor) -> torch.Tensor:
        # the best-scoring class of the unit's category (under the targets rule), from the same forward pass
        return logits.masked_fill(~allowed.to(logits.device), -math.inf).argmax(dim=1)

    keep = list(range(len(units)))
    logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    if choose.max_rank is not None:
        # The rank decides whether a unit is explained at all, so it is read first, from one
        # forward pass of the whole batch without a graph: filtered units then cost no backward
        # pass and no extra-pass method, and their targets and ranks are those of an unfiltered
        # run (same batch). The kept units are explained with these targets.
        with torch.no_grad():
            logits = lm.model(x).detach().float().cpu()
        targets = pick(logits)
        keep = [i for i in range(len(units)) if rank(logits[i], int(targets[i])) <= choose.max_rank]
    out: Maps | None = None
    if keep:
        # the whole batch where every unit is kept, so its maps are those of an unfiltered run
        sub = x if len(keep) == len(units) else x[keep]
        keys = [pair_key(units[i].sample) for i in keep]
        chosen = pick if targets is None else targets[keep]
        out = ex.explain(sub, targets=chosen, methods=list(methods), **engine.kwargs(methods, keys))  # type: ignore[arg-type]
        if logits is None:
            logits, targets = out.logits.detach().float().cpu(), out.targets.detach().cpu()
        del sub
    del x
    assert logits is not None and targets is not None
    return _per_unit(out, keep, logits, targets, methods, choose.rule)


def _per_unit(out: Maps | None, keep: list[int], logits: torch.Tensor, targets: torch.Tensor,
              methods: Sequence[str], rule: str) -> list[Explained]:
    """The engine's batch output cut into one ``Explained`` per unit (``keep``: the explained ones)."""
    maps = {} if out is None else {m: out.get(m).detach().float().cpu().numpy() for m in methods}
    extras = {} if out is None else {k: v.detach().float().cpu().numpy() for k, v in out.extras.items()}
    ms = {} if out is None else dict(out.milliseconds)
    probs = torch.softmax(logits, dim=1)
    row = {i: j for j, i in enumerate(keep)}  # a unit's place in the explained sub-batch
    results = []
    for i in range(len(logits)):
        t, j = int(targets[i]), row.get(i)
        results.append(Explained(
            maps={} if j is None else {m: maps[m][j] for m in methods},
            extras={} if j is None else {k: float(v[j]) for k, v in extras.items()},
            filtered=j is None, ms=ms, rectifiers=None if out is None else int(out.rectifiers),
            layer=None if j is None or out is None else out.layer, target=t, target_rule=rule,
            target_rank=rank(logits[i], t), target_prob=float(probs[i, t]), top1=int(logits[i].argmax())))
    return results


def rank(logits: torch.Tensor, target: int) -> int:
    """The target's rank among one unit's logits: 1 + the classes scoring strictly higher."""
    return int((logits > logits[target]).sum()) + 1


def load_model(spec: ModelSpec, device: str | torch.device) -> LoadedModel:
    from xcnn import models

    # Random weights (tests, timing) must be the same in every process, or a resumed run (or
    # another worker) would mix two different models; the global RNG is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return models.load(spec.name, weights=spec.weights, device=device, **spec.load_options())
