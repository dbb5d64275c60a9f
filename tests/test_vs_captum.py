"""Against Captum: equal where Captum is right, and right where Captum is wrong."""
from __future__ import annotations

import copy
import types

import pytest
import torch
import torchvision
from torch import nn

from xcnn import Explainer

captum_attr = pytest.importorskip("captum.attr")
pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.mark.parametrize("name,layer", [("resnet18", "layer4"), ("vgg11", "features")])
def test_equal_to_captum(name: str, layer: str) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
    x, t = torch.randn(2, 3, 64, 64), torch.tensor([1, 4])
    with Explainer(model, target_layer=layer) as ex:
        ours = ex.explain(x, t)
    module = dict(model.named_modules())[layer]
    A = captum_attr
    torch.testing.assert_close(ours.gradient, A.Saliency(model).attribute(x.clone(), target=t, abs=False))
    torch.testing.assert_close(ours.deconvnet, A.Deconvolution(model).attribute(x.clone(), target=t))
    gbp = A.GuidedBackprop(model).attribute(x.clone(), target=t)
    torch.testing.assert_close(ours.guided_backprop, gbp)
    # Captum leaves Grad-CAM unscaled; ours is min–max scaled to [0, 1] as the thesis does.
    cam = A.LayerGradCam(model, module).attribute(x.clone(), target=t, relu_attributions=True)
    cam = A.LayerAttribution.interpolate(cam, (64, 64), interpolate_mode="bilinear")
    lo, span = cam.amin((2, 3), keepdim=True), cam.amax((2, 3), keepdim=True) - cam.amin((2, 3), keepdim=True)
    torch.testing.assert_close(ours.gradcam, (cam - lo) / span)
    ggc = A.GuidedGradCam(model, module).attribute(x.clone(), target=t, interpolate_mode="bilinear")
    torch.testing.assert_close(ours.guided_gradcam, (ggc - lo * gbp) / span, atol=1e-6, rtol=1e-4)


class _GuidedRelu(torch.autograd.Function):
    """Reference guided rectifier, written independently of xcnn.rules."""

    @staticmethod
    def forward(ctx, z, upper):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(z)
        ctx.upper = upper
        return z.clamp(0, upper)

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def]
        (z,) = ctx.saved_tensors
        open_ = (z > 0) & (z < (ctx.upper if ctx.upper is not None else float("inf")))
        return g.clamp(min=0) * open_, None


class _GuidedModule(nn.Module):
    def __init__(self, upper: float | None) -> None:
        super().__init__()
        self.upper = upper

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _GuidedRelu.apply(z, self.upper)


def _reference_guided(model: nn.Module, x: torch.Tensor, target: int, monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
    """Guided backprop by rewriting a copy of the model: every ReLU / ReLU6 module replaced, and
    torchvision DenseNet's functional relu patched in its module namespace."""
    ref = copy.deepcopy(model)
    for parent in list(ref.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, nn.ReLU6):
                setattr(parent, child_name, _GuidedModule(6.0))
            elif isinstance(child, nn.ReLU):
                setattr(parent, child_name, _GuidedModule(None))
    fake_f = types.SimpleNamespace(**vars(torch.nn.functional))
    fake_f.relu = lambda z, inplace=False: _GuidedRelu.apply(z, None)
    monkeypatch.setattr(torchvision.models.densenet, "F", fake_f)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ref(xr)[0, target], xr)
    return g


@pytest.mark.parametrize("name", ["densenet121", "mobilenet_v2"])
def test_right_where_captum_is_wrong(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """DenseNet ends in a functional relu that module hooks never see; MobileNetV2's ReLU6 is
    not an nn.ReLU, so Captum back-propagates through it with the plain gradient."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    with Explainer(model) as ex:
        ours = ex.explain(x, 1, methods=["guided_backprop"]).guided_backprop
    captum = captum_attr.GuidedBackprop(model).attribute(x.clone(), target=1)
    reference = _reference_guided(model, x, 1, monkeypatch)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-4)
    error = (captum - reference).abs().max() / reference.abs().max()
    assert error > 0.05, f"Captum unexpectedly right on {name} (relative error {error:.3f})"
