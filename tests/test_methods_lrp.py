"""LRP (lrp_epsilon_plus_flat, lrp_epsilon_gamma_box) against zennit 0.5.1 itself, a hand-computed
Flat rule, relevance conservation through xcnn's canonizers, the model left as it was, and the
one-line refusals."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.nn import functional as F
from zennit.attribution import Gradient
from zennit.canonizers import Canonizer, SequentialMergeBatchNorm
from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat, LayerMapComposite
from zennit.layer import Sum
from zennit.rules import Epsilon, Norm, Pass
from zennit.torchvision import ResNetCanonizer, VGGCanonizer
from zennit.types import Activation, AvgPool, BatchNorm, Linear

import xcnn
from xcnn import models
from xcnn.errors import XcnnError
from xcnn.methods import canonizers as xc
from xcnn.methods.lrp import IMAGENET_MEAN, IMAGENET_STD, EpsilonGammaBoxParams

PLUS, GAMMA = "lrp_epsilon_plus_flat", "lrp_epsilon_gamma_box"


def _random_batch_norms(model: nn.Module) -> nn.Module:
    """Batch norms that are not the identity, so a missing or doubled merge shows."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model.eval()


def _images(batch: int = 2, h: int = 48, w: int = 64, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(1), dtype=dtype)


def _ours(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, name: str = PLUS, **kw: object) -> torch.Tensor:
    return xcnn.Explainer(model, target_layer=None).explain(x, targets, methods=[name], **kw).get(name)


def _zennit(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, composite: object) -> torch.Tensor:
    """zennit's own attribution: the Gradient attributor, a one-hot attr_output at the target."""
    with Gradient(model, composite) as attributor:
        logits = model(x)
        _, relevance = attributor(x.clone(), torch.eye(logits.shape[1], dtype=x.dtype)[targets])
    return relevance


def _close(ours: torch.Tensor, ref: torch.Tensor, tol: float = 1e-4) -> float:
    error = float((ours - ref).abs().max() / ref.abs().max())
    assert error <= tol, f"max |Δ| / max |R| = {error:.2e}"
    return error


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_restored(model: nn.Module, before: dict[str, torch.Tensor], x: torch.Tensor, out: torch.Tensor) -> None:
    state = model.state_dict()
    assert list(state) == list(before) and all(torch.equal(state[k], v) for k, v in before.items())
    assert not any(m._forward_hooks or m._forward_pre_hooks or "forward" in m.__dict__ or hasattr(m, "canonizer_sum")
                   for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), out)


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 5))


# --- equality with zennit ---------------------------------------------------------------------

def test_tiny_net_equals_zennit_both_composites_and_the_model_is_restored() -> None:
    torch.manual_seed(0)
    model = _random_batch_norms(_tiny())
    x, t = _images(), torch.tensor([1, 4])
    before = _snapshot(model)
    with torch.no_grad():
        out = model(x)
    _close(_ours(model, x, t), _zennit(model, x, t, EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])))
    _assert_restored(model, before, x, out)
    # Other statistics than ImageNet's: the box bounds follow the parameters.
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    ours = _ours(model, x, t, GAMMA, params={GAMMA: EpsilonGammaBoxParams(mean=mean, std=std)})
    ref = _zennit(model, x, t, EpsilonGammaBox(low=-m / s, high=(1 - m) / s, canonizers=[SequentialMergeBatchNorm()]))
    _close(ours, ref)
    imagenet = _ours(model, x, t, GAMMA)
    assert (imagenet - ours).abs().max() > 1e-2 * ours.abs().max()  # the bounds matter
    _assert_restored(model, before, x, out)


def test_flat_on_the_only_layer_spreads_the_relevance_evenly() -> None:
    """Flat on the first (here the only) linear layer: R_i = 1 / (number of inputs), by hand."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 6, 3))
    x = _images(2, 4, 6)
    np.testing.assert_allclose(_ours(model, x, torch.tensor([0, 2])).numpy(), 1 / 72, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "vgg11_bn"])
def test_epsilon_plus_flat_equals_zennit(arch: str) -> None:
    torch.manual_seed(0)
    model = _random_batch_norms(torchvision.models.get_model(arch, weights=None))
    canon = ResNetCanonizer() if arch.startswith("resnet") else VGGCanonizer()
    x, t = _images(), torch.tensor([3, 7])
    before = _snapshot(model)
    with torch.no_grad():
        out = model(x)
    _close(_ours(model, x, t), _zennit(model, x, t, EpsilonPlusFlat(canonizers=[canon])))
    _assert_restored(model, before, x, out)


@pytest.mark.slow
def test_epsilon_gamma_box_equals_zennit_on_vgg_with_imagenet_bounds() -> None:
    torch.manual_seed(0)
    model = _random_batch_norms(torchvision.models.vgg11_bn(weights=None))
    x, t = _images(), torch.tensor([3, 7])
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    low, high = torch.zeros_like(x[:1]) - mean / std, torch.zeros_like(x[:1]) + (1 - mean) / std  # as zennit's tutorial
    _close(_ours(model, x, t, GAMMA), _zennit(model, x, t, EpsilonGammaBox(low=low, high=high, canonizers=[VGGCanonizer()])))


def _lite0() -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    return _random_batch_norms(EfficientNet.from_name("efficientnet-lite0"))  # as xcnn.models loads it


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mobilenet_v2", "efficientnet_lite0"])
def test_mobilenet_v2_and_lite0_equal_zennit_given_xcnns_canonizers(arch: str) -> None:
    torch.manual_seed(0)
    if arch == "mobilenet_v2":
        model, canon = _random_batch_norms(torchvision.models.mobilenet_v2()), xc.MobileNetV2Canonizer()
    else:
        model, canon = _lite0(), xc.EfficientNetLiteCanonizer()
    x, t = _images(), torch.tensor([3, 7])
    before = _snapshot(model)
    with torch.no_grad():
        out = model(x)
    _close(_ours(model, x, t), _zennit(model, x, t, EpsilonPlusFlat(canonizers=[canon])))
    _assert_restored(model, before, x, out)


# --- xcnn's canonizers ------------------------------------------------------------------------

def _no_bias(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """No bias anywhere (so the ε rule conserves), batch norms that scale activations to order 1
    (random weights with identity batch norms shrink them below ε)."""
    def second_moment(module: nn.Module, inputs: tuple[torch.Tensor]) -> None:
        module.running_var.copy_(inputs[0].pow(2).mean((0, 2, 3)))

    hooks = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            m.bias.data.zero_()
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.zero_()
            m.bias.data.zero_()
            m.weight.data.uniform_(0.5, 1.5)
            hooks.append(m.register_forward_pre_hook(second_moment))
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return model


def _conserved(model: nn.Module, x: torch.Tensor, canon: Canonizer) -> torch.Tensor:
    """Σ input relevance per image under the ε rule everywhere (ε = 1e-12, float64): 1 where
    every operation of the forward pass is a rule's or conserves."""
    eps = 1e-12
    composite = LayerMapComposite([(Activation, Pass()), (Sum, Norm(stabilizer=eps)), (AvgPool, Norm(stabilizer=eps)),
                                   (BatchNorm, Pass()), (Linear, Epsilon(epsilon=eps))],
                                  canonizers=[canon])
    return _zennit(model, x, torch.tensor([3] * len(x)), composite).sum(dim=(1, 2, 3))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mobilenet_v2", "efficientnet_lite0"])
def test_canonizers_conserve_relevance(arch: str) -> None:
    """With xcnn's canonizer the ε rule conserves the seed relevance within 1e-3; with zennit's
    sequential merge alone (the residuals and the functional pool left to the gradient) it does not."""
    torch.manual_seed(0)
    x = _images(1, 32, 40, torch.float64)
    if arch == "mobilenet_v2":
        model, canon = torchvision.models.mobilenet_v2(width_mult=0.25), xc.MobileNetV2Canonizer
    else:
        model, canon = _lite0(), xc.EfficientNetLiteCanonizer
    model = _no_bias(model.double(), x)
    np.testing.assert_allclose(_conserved(model, x, canon()).numpy(), 1.0, atol=1e-3)
    assert (_conserved(model, x, SequentialMergeBatchNorm()) - 1).abs().min() > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("canonized", [True, False])
def test_mobilenet_v2_pool_shares_relevance_in_proportion_to_activations(canonized: bool) -> None:
    """The Norm rule on the global pool gives position (h, w) of channel c the share a_chw / Σ_hw a_c
    of the channel's relevance; the plain gradient through the functional pool (zennit alone)
    gives every position the same 1/N: conservation cannot tell them apart, this can."""
    torch.manual_seed(0)
    x = _images(1, 64, 64, torch.float64)
    model = _no_bias(torchvision.models.mobilenet_v2(width_mult=0.25).double(), x)
    seen: dict[str, torch.Tensor] = {}

    def keep(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        seen["a"] = output.detach()
        output.register_hook(lambda grad: seen.__setitem__("r", grad))

    handle = model.features.register_forward_hook(keep)
    try:
        _conserved(model, x, xc.MobileNetV2Canonizer() if canonized else SequentialMergeBatchNorm())
    finally:
        handle.remove()
    a, r = seen["a"], seen["r"]
    live = (a > 0).all(dim=(2, 3))  # channels active at every position (2×2 here)
    assert int(live.sum()) > 5
    ratio = (r / a.clamp_min(1e-300))[live]  # C×h×w: R / a per position
    spread = float(((ratio.amax(dim=(1, 2)) - ratio.amin(dim=(1, 2))) / ratio.abs().amax(dim=(1, 2))).max())
    assert (spread < 1e-6) if canonized else (spread > 1e-2)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mobilenet_v2", "efficientnet_lite0"])
def test_canonized_model_computes_the_same_function_with_every_batch_norm_merged(arch: str) -> None:
    torch.manual_seed(0)
    if arch == "mobilenet_v2":
        model = _random_batch_norms(torchvision.models.mobilenet_v2(width_mult=0.25))
    else:
        model = _lite0()
    model, x = model.double(), _images(1, 32, 40, torch.float64)  # a merge changes rounding only
    before = _snapshot(model)
    with torch.no_grad():
        out = model(x)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    eps = [m.eps for m in norms]
    chosen = xc.canonizers(model, PLUS)
    applied = [instance for c in chosen for instance in c.apply(model)]
    try:
        assert xc.unmerged(model, applied) is None
        assert all(torch.equal(m.running_var, torch.ones_like(m.running_var))
                   for m in model.modules() if isinstance(m, nn.BatchNorm2d))
        assert sum(isinstance(m, Sum) for m in model.modules()) > 0  # the residuals go through Sum modules
        # zennit leaves a merged batch norm as x / √(1 + eps): with eps = 0 it is the identity, and
        # the canonized model must then compute the model's function (a merge missed or doubled would not)
        for m in norms:
            m.eps = 0.0
        with torch.no_grad():
            torch.testing.assert_close(model(x), out, rtol=1e-9, atol=1e-9 * float(out.abs().max()))
    finally:
        for m, e in zip(norms, eps):
            m.eps = e
        for instance in applied:
            instance.remove()
    _assert_restored(model, before, x, out)


# --- the engine around it ---------------------------------------------------------------------

def test_chunking_and_other_methods_never_change_the_map() -> None:
    """Chunks of one image give the batch's map; the engine's rectifier rules (Guided
    Backprop asked in the same call) never reach LRP's backward, nor LRP the shared passes."""
    torch.manual_seed(0)
    model = _random_batch_norms(_tiny())
    x, t = _images(3), torch.tensor([0, 2, 4])
    alone = _ours(model, x, t)
    tiny_budget = _ours(model, x, t, memory_mb=1)
    torch.testing.assert_close(tiny_budget, alone, rtol=1e-5, atol=1e-7)
    together = xcnn.Explainer(model, target_layer=None).explain(x, t, methods=["guided_backprop", PLUS, GAMMA])
    torch.testing.assert_close(together.get(PLUS), alone, rtol=1e-5, atol=1e-7)
    guided = xcnn.Explainer(model, target_layer=None).explain(x, t, methods=["guided_backprop"]).get("guided_backprop")
    torch.testing.assert_close(together.get("guided_backprop"), guided)
    assert together.get(GAMMA).shape == (3, 3, 48, 64)


def test_captum_style_classes_equal_the_engine() -> None:
    from xcnn.methods import LRPEpsilonGammaBox, LRPEpsilonPlusFlat

    torch.manual_seed(0)
    model = _random_batch_norms(_tiny())
    x, t = _images(), torch.tensor([1, 2])
    torch.testing.assert_close(LRPEpsilonPlusFlat(model).attribute(x, target=t), _ours(model, x, t))
    lite = EpsilonGammaBoxParams(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    torch.testing.assert_close(LRPEpsilonGammaBox(model, params=lite).attribute(x, target=t),
                               _ours(model, x, t, GAMMA, params={GAMMA: lite}))


def test_xcnn_explain_cli_writes_the_lrp_map(tmp_path: Path) -> None:
    from tests import tiny_net
    from xcnn.cli import main

    photo = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "p.png")
    out = tmp_path / "out"
    assert main(["explain", str(tmp_path / "p.png"), "--model", "python:tests.tiny_net:build", "--weights", "random",
                 "--classes", ",".join(tiny_net.CLASSES), "--target", "1", "--methods", PLUS, "--out", str(out),
                 "--size", "original", "--save-raw"]) == 0
    lm = models.load("python:tests.tiny_net:build", weights="random", classes=tiny_net.CLASSES)
    x = lm.normalize(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255)
    saved = np.load(next(out.glob(f"p*-{PLUS}.npy")))
    np.testing.assert_allclose(saved, _ours(lm.model, x, torch.tensor([1]))[0].numpy(), rtol=1e-4, atol=1e-7)


# --- refusals ---------------------------------------------------------------------------------

class _FunctionalRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


def _inception_conv() -> nn.Module:
    from torchvision.models.inception import BasicConv2d

    return nn.Sequential(BasicConv2d(3, 4, kernel_size=3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def _timm() -> nn.Module:
    timm = pytest.importorskip("timm")
    return timm.create_model("resnet10t", pretrained=False, num_classes=3)


def _squeeze_excitation() -> nn.Module:
    from torchvision.ops.misc import SqueezeExcitation

    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), SqueezeExcitation(4, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


REFUSED = [
    (_squeeze_excitation, "module '2' (SqueezeExcitation) multiplies activations by a gate (squeeze-excitation, "
                          "scale * input)"),
    (_inception_conv, "module '0' (BasicConv2d) applies relu as a function"),
    (_FunctionalRelu, "the model itself (_FunctionalRelu) is a tests.test_methods_lrp._FunctionalRelu"),
    (lambda: torchvision.models.DenseNet(4, (1, 1), 8), "the model itself (DenseNet) applies relu"),
    pytest.param(_timm, "is a timm block", marks=pytest.mark.slow),  # importing timm takes seconds
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(4, 3)), "module '1' (GroupNorm) is a torch.nn.modules.normalization.GroupNorm"),
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(4, 3)), "module '2' (BatchNorm2d) follows no convolution"),
]


@pytest.mark.parametrize(("build", "said"), REFUSED)
def test_uncovered_models_are_refused_in_one_line_naming_the_module(build: Callable[[], nn.Module],
                                                                    said: str) -> None:
    torch.manual_seed(0)
    model = build().eval()
    x = _images(1, 32, 32)
    before = _snapshot(model)
    with torch.no_grad():
        out = model(x)
    for name in (PLUS, GAMMA):
        with pytest.raises(XcnnError) as err:
            _ours(model, x, torch.tensor([0]), name)
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"{name} cannot explain this model: ") and said in message
        _assert_restored(model, before, x, out)


@pytest.mark.slow
def test_torchvision_efficientnet_is_refused_at_its_squeeze_excitation() -> None:
    with pytest.raises(XcnnError, match=r"module 'features.1.0.block.1' \(SqueezeExcitation\) multiplies"):
        _ours(torchvision.models.efficientnet_b0().eval(), _images(1, 32, 32), torch.tensor([0]))


@pytest.mark.slow
def test_covered_torchvision_families() -> None:
    """Which torchvision CNNs are covered (docs/METHOD.md lists them) — by module types, no pass."""
    covered = {n for n in ("alexnet", "squeezenet1_1", "resnext50_32x4d", "wide_resnet50_2", "vgg16", "mobilenet_v2")
               if xc.refusal(torchvision.models.get_model(n, weights=None)) is None}
    refused = {n for n in ("mobilenet_v3_small", "shufflenet_v2_x0_5", "mnasnet0_5", "regnet_y_400mf", "googlenet",
                           "convnext_tiny") if xc.refusal(torchvision.models.get_model(n, weights=None)) is not None}
    assert covered == {"alexnet", "squeezenet1_1", "resnext50_32x4d", "wide_resnet50_2", "vgg16", "mobilenet_v2"}
    assert refused == {"mobilenet_v3_small", "shufflenet_v2_x0_5", "mnasnet0_5", "regnet_y_400mf", "googlenet",
                       "convnext_tiny"}


def test_box_statistics_are_validated() -> None:
    from xcnn import registry

    with pytest.raises(ValueError, match=r"std must be three finite numbers \(R, G, B\), each > 0"):
        EpsilonGammaBoxParams(std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="mean must be three finite numbers"):
        EpsilonGammaBoxParams(mean=(0.5, 0.5))  # type: ignore[arg-type]
    with pytest.raises(XcnnError, match="lrp_epsilon_gamma_box parameters: .*mean"):
        registry.parse_params(registry.get(GAMMA), {"mean": float("nan")}, f"{GAMMA} parameters")
    assert EpsilonGammaBoxParams(mean=[0, 0.5, 1], std=(1, 1, 1)).mean == (0.0, 0.5, 1.0)  # type: ignore[arg-type]
