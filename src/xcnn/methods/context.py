"""What one engine call hands to every compute function of the registry.

The engine makes one forward pass and the backward passes the asked methods' rules need, then
calls each method's compute function, in registry order, with one ``Context``. A compute
function returns the method's B×C×H×W map and may leave per-image numbers in ``extras``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from xcnn.methods.registry import Options


@dataclass
class Context:
    model: nn.Module  # in eval mode for the whole call
    images: torch.Tensor  # B×3×H×W in the model's input space, detached
    targets: torch.Tensor  # LongTensor[B]
    logits: torch.Tensor  # B×classes from the shared forward pass, detached
    options: Options
    keys: Sequence[str]  # one per image; seeds per-photo randomness so batching never changes a map
    grads: dict[str, torch.Tensor] = field(default_factory=dict)  # ∂y_c/∂x by rule: gradient, deconvnet, guided
    activation: torch.Tensor | None = None  # target-layer activations A, B×K×h×w, detached
    layer_grad: torch.Tensor | None = None  # ∂y_c/∂A (gradient rule), B×K×h×w
    layer: str | None = None  # target layer name
    maps: dict[str, torch.Tensor] = field(default_factory=dict)  # maps computed so far in this call
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # per-image numbers, e.g. "ig_completeness"

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])


def to_heat(cam: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A B×1×h×w class-activation map upsampled bilinearly to H×W and min-max scaled to [0, 1]
    per image, as Grad-CAM does. A map with no spread stays all zero (never NaN)."""
    cam = F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)
    lo = cam.amin(dim=(2, 3), keepdim=True)
    span = cam.amax(dim=(2, 3), keepdim=True) - lo
    return torch.where(span > 0, (cam - lo) / span.clamp_min(torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))
