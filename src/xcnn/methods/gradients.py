"""Input-space maps read straight from the engine's backward passes (B×3×H×W, signed).

Each backward pass is input-only and runs under one rectifier rule (xcnn.rules), so these
functions only pick the right gradient; none of them runs the model.
"""
from __future__ import annotations

import torch

from xcnn.methods.context import Context
from xcnn.registry import method


@method("gradient", label="Gradient", kind="signed", rules=("gradient",), reference="Simonyan et al. 2013")
def gradient(ctx: Context) -> torch.Tensor:
    """∂y_c/∂x (Simonyan et al. 2013; "Backpropagation" in the thesis)."""
    return ctx.grads["gradient"]


@method("deconvnet", label="Deconvnet", kind="signed", rules=("deconvnet",), reference="Zeiler & Fergus 2014")
def deconvnet(ctx: Context) -> torch.Tensor:
    """Rectifiers pass relu(g) whatever their forward input was (Zeiler & Fergus 2014)."""
    return ctx.grads["deconvnet"]


@method("guided_backprop", label="Guided Backprop", kind="signed", rules=("guided",),
        reference="Springenberg et al. 2014")
def guided_backprop(ctx: Context) -> torch.Tensor:
    """Rectifiers pass relu(g) where their forward input was positive (Springenberg et al. 2014)."""
    return ctx.grads["guided"]


@method("input_x_gradient", label="Input × Gradient", kind="signed", rules=("gradient",),
        reference="Shrikumar et al. 2016")
def input_x_gradient(ctx: Context) -> torch.Tensor:
    """x ⊙ ∂y_c/∂x in the model's input space, i.e. after normalisation (Shrikumar et al. 2016),
    as Captum's InputXGradient does when it is given the normalised tensor."""
    return ctx.images * ctx.grads["gradient"]
