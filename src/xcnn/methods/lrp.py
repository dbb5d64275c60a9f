"""Layer-wise Relevance Propagation (Bach et al. 2015) with zennit 0.5.1's composites (Kohlbrenner
et al. 2020), used as a library.

- ``lrp_epsilon_plus_flat``: zennit's ``EpsilonPlusFlat``: Flat on the first convolution or linear
  layer (in ``modules()`` order), z⁺ on the other convolutions (x⁺w⁺ + x⁻w⁻, positive bias kept),
  ε = 1e-6 on ``nn.Linear``; Pass on batch norms (merged first) and activations; Norm on sums and
  average pools; the plain gradient through max-pools.
- ``lrp_epsilon_gamma_box``: zennit's ``EpsilonGammaBox``: ZBox on the first convolution with the
  bounds (0 − mean)/std and (1 − mean)/std per channel, generalised Gamma (γ = 0.25) on the other
  convolutions, ε = 1e-6 on ``nn.Linear``; the rest as above.

The output relevance is 1 at the target class and 0 elsewhere (zennit's ``Gradient`` attributor
with a one-hot ``attr_output``); the map is the B×3×H×W relevance at the input, signed.

The model is canonized for the call (xcnn.methods.canonizers: batch norms merged, residual sums
and functional poolings made modules) and restored afterwards, parameters and forward functions
as they were, whatever happens. A model the canonizers do not cover is refused in one line.

Cost: one forward and one backward per image, in chunks sized to ``ctx.memory_mb``; inside the
backward zennit reruns each layer it has a rule for on modified weights: 2 forward passes a
convolution for z⁺, 5 for Gamma (3 for ZBox, 1 for Flat and ε).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from xcnn.errors import XcnnError
from xcnn.methods import canonizers
from xcnn.methods.context import Context
from xcnn.methods.passes import Tally
from xcnn.methods.sampling import chunk_items, even_chunks, footprint, plain_torch
from xcnn.registry import method

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's, for a bare Explainer(model)
IMAGENET_STD = (0.229, 0.224, 0.225)
EPSILON = 1e-6  # zennit's defaults for both composites: ε on linear layers and every rule's stabiliser
GAMMA = 0.25


def _statistics(values: Any, name: str, positive: bool) -> tuple[float, float, float] | None:
    if values is None:
        return None
    items = list(values) if isinstance(values, (tuple, list)) else []
    good = len(items) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                   and (v > 0 or not positive) for v in items)
    if not good:
        raise ValueError(f"lrp_epsilon_gamma_box {name} must be three finite numbers (R, G, B)"
                         f"{', each > 0' if positive else ''}, got {values!r}")
    return float(items[0]), float(items[1]), float(items[2])


@dataclass(frozen=True)
class EpsilonGammaBoxParams:
    # None: the loaded model's normalisation, given by whoever runs the method (a run, xcnn explain);
    # torchvision's ImageNet mean and std for a bare Explainer(model).
    mean: tuple[float, float, float] | None = field(default=None, metadata={
        "help": "the model's input mean per channel, for the ZBox bounds (none: ImageNet's)"})
    std: tuple[float, float, float] | None = field(default=None, metadata={
        "help": "the model's input std per channel, for the ZBox bounds (none: ImageNet's)"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _statistics(self.mean, "mean", positive=False))
        object.__setattr__(self, "std", _statistics(self.std, "std", positive=True))

    def bounds(self, like: torch.Tensor, model_statistics: tuple[Sequence[float], Sequence[float]] | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(low, high): the values a pixel in [0, 1] takes in the model's input space, 1×3×1×1.
        The parameters win; then the loaded model's own statistics; then ImageNet's."""
        known = model_statistics or (IMAGENET_MEAN, IMAGENET_STD)
        mean = torch.tensor(self.mean or known[0], dtype=like.dtype, device=like.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std or known[1], dtype=like.dtype, device=like.device).view(1, 3, 1, 1)
        return (0 - mean) / std, (1 - mean) / std


@method("lrp_epsilon_plus_flat", label="LRP EpsilonPlusFlat", kind="signed", extra_passes=True,
        reference="Bach et al. 2015; Kohlbrenner et al. 2020 (zennit EpsilonPlusFlat)")
def lrp_epsilon_plus_flat(ctx: Context) -> torch.Tensor:
    """zennit's EpsilonPlusFlat relevance of the target, B×3×H×W, signed."""
    from zennit.composites import EpsilonPlusFlat

    return relevance(ctx, "lrp_epsilon_plus_flat",
                     lambda canon: EpsilonPlusFlat(epsilon=EPSILON, stabilizer=EPSILON, canonizers=canon))


@method("lrp_epsilon_gamma_box", label="LRP EpsilonGammaBox", kind="signed", extra_passes=True,
        params=EpsilonGammaBoxParams,
        reference="Bach et al. 2015; Kohlbrenner et al. 2020 (zennit EpsilonGammaBox)")
def lrp_epsilon_gamma_box(ctx: Context) -> torch.Tensor:
    """zennit's EpsilonGammaBox relevance of the target, B×3×H×W, signed."""
    from zennit.composites import EpsilonGammaBox

    low, high = ctx.params_of(EpsilonGammaBoxParams, "lrp_epsilon_gamma_box").bounds(ctx.images, ctx.input_statistics)
    return relevance(ctx, "lrp_epsilon_gamma_box",
                     lambda canon: EpsilonGammaBox(low=low, high=high, epsilon=EPSILON, gamma=GAMMA,
                                                   stabilizer=EPSILON, canonizers=canon))


def relevance(ctx: Context, name: str, composite: Callable[[list[Any]], Any]) -> torch.Tensor:
    """The input relevance of ``ctx.targets`` under the composite ``composite(canonizers)`` makes,
    with the model canonized for the call and restored afterwards."""
    model, x, targets = ctx.model, ctx.images, ctx.targets
    batch = int(x.shape[0])
    # The engine's rectifier rules (a torch function mode) would change every ReLU's backward.
    with plain_torch():
        canon = canonizers.canonizers(model, name)
        # zennit keeps a copy of each hooked layer's input besides what autograd saves: twice the probe's
        most = chunk_items(2 * footprint(model, x).grad_bytes, ctx.memory_mb)
        size = even_chunks(batch, most)
        log.debug("%s: %d images in chunks of %d", name, batch, size)
        out = torch.empty_like(x)
        tally = Tally(f"{name} passes", batch)
        rules = composite(canon)
        try:
            # Not zennit's context manager: a register that fails half-way must be undone too.
            rules.register(model)
            left = canonizers.unmerged(model, rules.handles)
            if left is not None:
                raise XcnnError(f"{name} cannot explain this model: {left}; choose a gradient or CAM method for it")
            with torch.enable_grad():
                for start in range(0, batch, size):
                    part = x[start:start + size].detach().requires_grad_(True)
                    logits = model(part)
                    seed = _one_hot(logits, targets[start:start + size])
                    (out[start:start + size],) = torch.autograd.grad(logits, part, grad_outputs=seed)
                    tally.add(len(part))
        finally:
            rules.remove()
    return out


def _one_hot(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if logits.dim() != 2:
        raise XcnnError(f"LRP needs B×classes logits, got shape {tuple(logits.shape)}")
    return torch.zeros_like(logits).scatter_(1, targets[:, None], 1.0)


