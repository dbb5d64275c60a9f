"""Every torchvision classification CNN (random weights, small input): every single-pass method
gives a finite map of the right shape, and the model is exactly as before."""
from __future__ import annotations

import inspect

import pytest
import torch

from tests.test_engine import _assert_same, _snapshot
from xcnn import Explainer, models
from xcnn.methods.registry import SINGLE_PASS, get

NAMES = [n for n in models.available() if n != "efficientnet_lite0"]


def test_list_covers_the_families() -> None:
    families = {"alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s", "googlenet",
                "inception_v3", "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf", "resnet18",
                "resnext50_32x4d", "shufflenet_v2_x0_5", "squeezenet1_0", "vgg11", "wide_resnet50_2"}
    assert families <= set(NAMES)
    assert not any(n.startswith(("vit_", "swin_", "maxvit")) for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_torchvision_cnn(name: str) -> None:
    torch.manual_seed(0)
    model = models.load(name, weights="random").model
    before = _snapshot(model)
    side = 80 if name == "inception_v3" else 64
    with Explainer(model) as ex:
        maps = ex.explain(torch.randn(2, 3, side, side + 8), [0, 999], methods=SINGLE_PASS)
    for m in SINGLE_PASS:
        heat = get(m).kind == "heat"
        assert maps.get(m).shape == (2, 1 if heat else 3, side, side + 8), m
        assert torch.isfinite(maps.get(m)).all(), m
        if heat:
            assert maps.get(m).min() >= 0 and maps.get(m).max() <= 1, m
    # Rectifiers and other activations are all accounted for: every model has one or the other.
    assert maps.rectifiers + sum(maps.kept_activations.values()) > 0
    _assert_same(before, _snapshot(model))


# timm classifiers with random weights: convolutional (ReLU, GELU, SiLU) and token-grid ones.
TIMM = ["resnet50", "convnext_tiny", "efficientnet_b0", "vit_small_patch16_224", "swin_tiny_patch4_window7_224"]


@pytest.mark.parametrize("arch", TIMM)
def test_timm_models(arch: str) -> None:
    pytest.importorskip("timm", reason="timm models need the timm extra: pip install 'xcnn[timm]'")
    lm = models.load(f"timm:{arch}", weights="random")
    side = 224 if lm.fixed_size else 64  # ViT and Swin take only their training size
    if lm.layout is not None and "layout" not in inspect.signature(Explainer).parameters:
        pytest.skip("this engine reads no token-grid layouts yet")
    layout = {} if lm.layout is None else {"layout": lm.layout}
    with Explainer(lm.model, target_layer=lm.gradcam_layer, **layout) as ex:
        maps = ex.explain(torch.randn(1, 3, side, side), [281], methods=SINGLE_PASS)
    for m in SINGLE_PASS:
        heat = get(m).kind == "heat"
        assert maps.get(m).shape == (1, 1 if heat else 3, side, side), m
        assert torch.isfinite(maps.get(m)).all(), m
    if maps.rectifiers == 0:  # GELU / SiLU networks: the rules have nothing to change
        assert maps.kept_activations
        assert torch.equal(maps.deconvnet, maps.gradient) and torch.equal(maps.guided_backprop, maps.gradient)
