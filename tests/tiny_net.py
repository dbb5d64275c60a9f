"""Networks for the model tests: a tiny 3-class CNN built by a python: factory, a GELU-only
one, and two that must be refused (ReLUs no hook sees, as in scripted code; a wrongly shaped output)."""
from __future__ import annotations

import torch
from torch import nn

CLASSES = ["cat", "dog", "bird"]


def build() -> nn.Module:
    """3 classes (CLASSES), ReLU: what `python:tests.tiny_net:build` names."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


def gelu() -> nn.Module:
    """No rectifier at all: Deconvnet and Guided Backprop then equal Gradient."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 8, 3, padding=1), nn.GELU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


class _Opaque(nn.Sequential):
    """ReLU modules whose calls run as raw ATen ops, where no Python hook sees them: what TorchScript
    and compiled code do (torch.jit.script itself is deprecated, and warns)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self:
            x = torch.ops.aten.relu(x) if isinstance(module, nn.ReLU) else module(x)
        return x


def opaque() -> nn.Module:
    """Its ReLUs run where the rectifier rules cannot reach them (as in a scripted model)."""
    return _Opaque(*build())


def spatial() -> nn.Module:
    """A segmentation-like output, B×3×H×W: not a classifier."""
    return nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU())
