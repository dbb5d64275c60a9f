"""One class per method, Captum-style, each a thin layer over the engine:

    GuidedBackprop(model).attribute(images, target=281)

Each call runs only the backward pass its method needs. To get several maps of the same
images, use ``Explainer.explain`` instead: it shares the forward pass between them.
"""
from __future__ import annotations

import torch
from torch import nn

from xcnn.engine import Explainer, Targets


class _Method:
    method = ""
    uses_layer = False  # only the Grad-CAM methods read a layer; the others never look for one

    def __init__(self, model: nn.Module, target_layer: str | None = "auto") -> None:
        self.explainer = Explainer(model, target_layer=target_layer if self.uses_layer else None)

    def attribute(self, inputs: torch.Tensor, target: Targets = None) -> torch.Tensor:
        return self.explainer.explain(inputs, target, methods=[self.method]).get(self.method)


class Gradient(_Method):
    """∂y_c/∂x (Simonyan 2013; "Backpropagation" in the thesis)."""

    method = "gradient"


class Deconvnet(_Method):
    """Zeiler & Fergus 2014: rectifiers pass relu(g), ignoring the forward mask."""

    method = "deconvnet"


class GuidedBackprop(_Method):
    """Springenberg 2014: rectifiers pass relu(g) where the forward input was positive."""

    method = "guided_backprop"


class GradCAM(_Method):
    """Selvaraju 2017: ReLU(Σ_k mean(∂y_c/∂A_k)·A_k), upsampled and scaled to [0, 1]; B×1×H×W."""

    method = "gradcam"
    uses_layer = True


class GuidedGradCAM(_Method):
    """Guided Backprop ⊙ Grad-CAM."""

    method = "guided_gradcam"
    uses_layer = True
