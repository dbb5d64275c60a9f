"""The engine against answers known independently: autograd, hand-written backprop, CAM."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from xcnn import METHODS, Explainer, XcnnError
from xcnn.engine import find_target_layer

torch.manual_seed(0)


class TinyNet(nn.Module):
    """Every kind of rectifier on a 12-pixel image: nn.ReLU, in-place nn.ReLU6, one ReLU module
    called twice, and functional relu_ — the cases module-hook implementations get wrong."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        shapes = [(12, 8), (8, 8), (8, 8), (8, 8), (8, 5)]
        self.w = nn.ParameterList([nn.Parameter(torch.randn(o, i, generator=g)) for i, o in shapes])
        self.relu = nn.ReLU()
        self.relu6 = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        h = self.relu(h @ self.w[0].T)
        h = self.relu6(h @ self.w[1].T * 3)
        h = self.relu(h @ self.w[2].T)  # the same module object, second call
        h = torch.relu_(h @ self.w[3].T)
        return h @ self.w[4].T


def hand_backprop(net: TinyNet, x: np.ndarray, c: int, rule: str) -> np.ndarray:
    """The three rules written out in NumPy, layer by layer (no autograd)."""
    W = [w.detach().double().numpy() for w in net.w]
    z, a = [], x.reshape(-1).astype(np.float64)
    scales, uppers = [1, 3, 1, 1], [None, 6.0, None, None]
    for w, s, up in zip(W[:4], scales, uppers):
        zi = (w @ a) * s
        z.append(zi)
        a = np.clip(zi, 0, up)
    g = W[4][c].copy()
    for w, s, up, zi in reversed(list(zip(W[:4], scales, uppers, z))):
        mask = (zi > 0) & (zi < (up if up is not None else np.inf))
        g = {"gradient": g * mask, "deconvnet": np.maximum(g, 0), "guided": np.maximum(g, 0) * mask}[rule]
        g = (w.T @ (g * s))
    return g.reshape(x.shape)


def test_tiny_net_rules_match_hand_backprop() -> None:
    net = TinyNet()
    x = torch.randn(3, 3, 2, 2)
    with Explainer(net, target_layer=None) as ex:
        maps = ex.explain(x, [0, 3, 4], methods=["gradient", "deconvnet", "guided_backprop"])
    assert maps.rectifiers == 4
    for i, c in enumerate([0, 3, 4]):
        for method, rule in [("gradient", "gradient"), ("deconvnet", "deconvnet"), ("guided_backprop", "guided")]:
            expected = hand_backprop(net, x[i].numpy(), c, rule)
            np.testing.assert_allclose(maps.get(method)[i].numpy(), expected, rtol=1e-4, atol=1e-5)
    # The rules genuinely differ here, so the comparison above could fail.
    assert not torch.allclose(maps.gradient, maps.deconvnet)
    assert not torch.allclose(maps.deconvnet, maps.guided_backprop)


def test_scalar_example_by_hand() -> None:
    """y = 2·relu(x1 − x2) − relu(x2): at x1=1, x2=3 only the second relu is open."""

    class Net(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b = x[:, 0, 0, 0], x[:, 0, 0, 1]
            y = 2 * F.relu(a - b) - torch.relu(b)
            return torch.stack([y, -y], dim=1)

    x = torch.zeros(1, 3, 1, 2)
    x[0, 0, 0] = torch.tensor([1.0, 3.0])
    with Explainer(Net(), target_layer=None) as ex:
        m = ex.explain(x, 0, methods=["gradient", "deconvnet", "guided_backprop"])
    # gradient: only relu(b) is open -> dy/da = 0, dy/db = -1
    assert m.gradient[0, 0, 0].tolist() == [0.0, -1.0]
    # deconvnet: relu(2)=2 through the closed relu (a−b): (2, −2); relu(−1)=0 through relu(b)
    assert m.deconvnet[0, 0, 0].tolist() == [2.0, -2.0]
    # guided: closed relu blocks 2; relu(−1) = 0 blocks the other path
    assert m.guided_backprop[0, 0, 0].tolist() == [0.0, 0.0]


def test_gradient_equals_autograd_and_no_weight_grads() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 48, 64)
    with Explainer(model) as ex:
        maps = ex.explain(x, torch.tensor([3, 7]))
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xr)[[0, 1], [3, 7]].sum(), xr)
    torch.testing.assert_close(maps.gradient, g)
    assert all(p.grad is None for p in model.parameters())
    assert maps.rectifiers == 17  # resnet18: one stem relu + 2 per basic block × 8
    assert maps.logits.shape == (2, 10)


def test_gradcam_on_gap_linear_net_is_cam() -> None:
    """For conv → ReLU → global average pool → linear, Grad-CAM is CAM (Zhou 2016) up to scale."""
    torch.manual_seed(0)  # unseeded, a draw after other tests' could give a CAM with no spread (0/0)
    features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, stride=2, padding=1), nn.ReLU())
    fc = nn.Linear(5, 4)
    model = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc).eval()
    x = torch.randn(2, 3, 20, 28)
    targets = torch.tensor([1, 2])
    with Explainer(model, target_layer="0") as ex:
        maps = ex.explain(x, targets, methods=["gradcam"])
    with torch.no_grad():
        a = features(x)
        cam = torch.einsum("bk,bkhw->bhw", fc.weight[targets], a).clamp(min=0)[:, None]
        cam = F.interpolate(cam, size=(20, 28), mode="bilinear", align_corners=False)
        lo, hi = cam.amin((2, 3), keepdim=True), cam.amax((2, 3), keepdim=True)
        expected = (cam - lo) / (hi - lo)
    torch.testing.assert_close(maps.gradcam, expected, atol=1e-5, rtol=1e-4)
    assert maps.gradcam.shape == (2, 1, 20, 28)
    assert maps.gradient is None and maps.guided_gradcam is None


def test_guided_gradcam_is_product_and_batch_is_independent() -> None:
    model = torchvision.models.vgg11(weights=None, num_classes=6).eval()
    x = torch.randn(3, 3, 64, 48)
    with Explainer(model) as ex:
        full = ex.explain(x, [0, 5, 2])
        single = ex.explain(x[1:2], 5)
    torch.testing.assert_close(full.guided_gradcam, full.guided_backprop * full.gradcam)
    for m in METHODS:
        torch.testing.assert_close(full.get(m)[1:2], single.get(m), atol=1e-5, rtol=1e-4)
    assert full.gradcam.min() >= 0 and full.gradcam.max() <= 1


def test_works_under_no_grad() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    x = torch.randn(1, 3, 32, 32)
    with Explainer(model) as ex:
        expected = ex.explain(x, 1, methods=["gradient", "layercam"])
        with torch.no_grad():
            got = ex.explain(x, 1, methods=["gradient", "layercam"])
            assert not torch.is_grad_enabled()
    torch.testing.assert_close(got.gradient, expected.gradient)
    torch.testing.assert_close(got.layercam, expected.layercam)


def test_targets_none_and_callable_choose_after_the_forward_pass() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=8).eval()
    x = torch.randn(2, 3, 32, 32)
    with Explainer(model) as ex:
        top = ex.explain(x, None, methods=["gradient"])
        chosen = ex.explain(x, lambda logits: logits[:, 4:].argmax(1) + 4, methods=["gradient"])
    assert top.targets.tolist() == top.logits.argmax(1).tolist()
    assert chosen.targets.tolist() == (top.logits[:, 4:].argmax(1) + 4).tolist()


def test_target_layer_auto_and_named() -> None:
    assert find_target_layer(torchvision.models.resnet18(weights=None), torch.zeros(1, 3, 64, 64)) == "layer4"
    assert find_target_layer(torchvision.models.vgg11(weights=None), torch.zeros(1, 3, 64, 64)) == "features"
    assert find_target_layer(torchvision.models.densenet121(weights=None), torch.zeros(1, 3, 64, 64)) == "features"
    assert find_target_layer(torchvision.models.mobilenet_v2(weights=None), torch.zeros(1, 3, 64, 64)) == "features"
    with pytest.raises(XcnnError, match=r"no layer named 'layer5'.*layer4"):
        Explainer(torchvision.models.resnet18(weights=None), target_layer="layer5")


def test_gradcam_depends_on_class() -> None:
    """A Grad-CAM map identical for every class would be a bug."""
    torch.manual_seed(3)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(1, 3, 96, 96)
    with Explainer(model) as ex:
        a = ex.explain(x, 1, methods=["gradcam"]).gradcam
        b = ex.explain(x, 2, methods=["gradcam"]).gradcam
    assert (a - b).abs().max() > 0.05


def _snapshot(model: nn.Module) -> dict:
    return {
        "modules": [(n, type(m), id(m)) for n, m in model.named_modules()],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "hooks": sum(
            len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
            for m in model.modules()
        ),
        "grads": [p.grad for p in model.parameters()],
    }


def _assert_same(before: dict, after: dict) -> None:
    for key in ("modules", "inplace", "training", "requires_grad", "hooks"):
        assert before[key] == after[key], key
    assert all(g is None for g in after["grads"])
    assert before["state"].keys() == after["state"].keys()
    for k in before["state"]:
        assert torch.equal(before["state"][k], after["state"][k]), k


def test_model_unchanged_even_when_explain_raises() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    model.train()  # a model left in training mode must come back in training mode
    model.layer1[0].bn1.eval()
    before = _snapshot(model)
    with Explainer(model) as ex:
        ex.explain(torch.randn(1, 3, 32, 32), 1)
        _assert_same(before, _snapshot(model))
        with pytest.raises(XcnnError, match="out of range"):
            ex.explain(torch.randn(1, 3, 32, 32), 99)
        _assert_same(before, _snapshot(model))
        with pytest.raises(RuntimeError):  # the model itself fails mid-forward (a 32×0 image)
            ex.explain(torch.randn(1, 3, 32, 32)[:, :, :, :0].expand(1, 3, 32, 0), 1)
    _assert_same(before, _snapshot(model))


def test_explainer_holds_nothing_to_close() -> None:
    """Used without `with`, it leaves the model as it was after each call (no close to forget);
    the `with` form of the examples still works."""
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    before = _snapshot(model)
    ex = Explainer(model)
    ex.explain(torch.randn(1, 3, 32, 32), 1)
    _assert_same(before, _snapshot(model))
    assert not hasattr(ex, "close")
    with Explainer(model) as again:
        assert again.explain(torch.randn(1, 3, 32, 32), 1).gradcam.shape == (1, 1, 32, 32)


def test_bad_arguments_are_one_line_errors() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    with Explainer(model) as ex:
        with pytest.raises(XcnnError, match="B×3×H×W"):
            ex.explain(torch.randn(3, 32, 32), 1)
        with pytest.raises(XcnnError, match="unknown method"):
            ex.explain(torch.randn(1, 3, 32, 32), 1, methods=["saliency"])
        with pytest.raises(XcnnError, match="one class or 2 classes"):
            ex.explain(torch.randn(2, 3, 32, 32), [1, 2, 3])


def test_one_class_per_method_equals_the_shared_pass() -> None:
    from xcnn.methods import CLASSES, Attribution, GuidedBackprop
    from xcnn.methods.registry import ALL_METHODS, SINGLE_PASS

    # Every registry method has its class, named from its label, with no class written by hand.
    assert set(CLASSES) == set(ALL_METHODS)
    names = {m: cls.__name__ for m, cls in CLASSES.items()}
    assert names["gradcam_pp"] == "GradCAMPlusPlus" and names["input_x_gradient"] == "InputXGradient"
    assert all(n.isidentifier() and n[0].isupper() for n in names.values())
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 40, 40)
    with Explainer(model) as ex:
        shared = ex.explain(x, [2, 5], methods=SINGLE_PASS)
    for method in SINGLE_PASS:
        torch.testing.assert_close(CLASSES[method](model).attribute(x, target=[2, 5]), shared.get(method))
    torch.testing.assert_close(Attribution(model, "layercam").attribute(x, target=[2, 5]), shared.layercam)
    torch.testing.assert_close(GuidedBackprop(model).attribute(x, target=[2, 5]), shared.guided_backprop)
    # A method without a layer never looks for one.
    assert GuidedBackprop(model, target_layer="no such layer").explainer.target_layer is None
    with pytest.raises(XcnnError, match="did you mean 'layercam'"):
        Attribution(model, "layer_cam")


def test_milliseconds_share_the_call() -> None:
    import time

    model = torchvision.models.resnet18(weights=None, num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    with Explainer(model, target_layer="layer4") as ex:
        start = time.perf_counter()
        maps = ex.explain(x, 1, methods=["gradient", "gradcam", "eigencam"])
        wall = time.perf_counter() - start
    ms = maps.milliseconds
    assert set(ms) == {"gradient", "gradcam", "eigencam"} and all(v > 0 for v in ms.values())
    # Per image, so the batch's total is the sum times B, and it cannot exceed the call.
    assert sum(ms.values()) * 2 <= wall * 1000


def test_options_and_keys_are_checked() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    with Explainer(model) as ex:
        with pytest.raises(XcnnError, match="params must be"):
            ex.explain(torch.randn(1, 3, 32, 32), 1, params=3)  # type: ignore[arg-type]
        with pytest.raises(XcnnError, match="params for unknown methods"):
            ex.explain(torch.randn(1, 3, 32, 32), 1, params={"ig_steps": 3})
        with pytest.raises(XcnnError, match="one string per image: got 1 for 2"):
            ex.explain(torch.randn(2, 3, 32, 32), 1, keys=["a"])
        with pytest.raises(XcnnError, match="listed twice"):
            ex.explain(torch.randn(1, 3, 32, 32), 1, methods=["gradcam", "gradcam"])


def test_extra_pass_methods_get_options_and_keys_through_the_engine() -> None:
    """The extra-pass methods are called like the others; what they read (options, keys) and
    leave (extras) passes through."""
    from xcnn import Options
    from xcnn.methods.registry import ALL_METHODS

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    options = Options(ig_steps=4, smoothgrad_samples=3, scorecam_top_k=8)
    with Explainer(model) as ex:
        both = ex.explain(x, [1, 2], methods=ALL_METHODS, params=options, keys=["a", "b"])
        alone = ex.explain(x[1:], 2, methods=["smoothgrad"], params=options, keys=["b"])
        other_key = ex.explain(x[1:], 2, methods=["smoothgrad"], params=options, keys=["c"])
        one_channel = ex.explain(x, [1, 2], methods=["scorecam"], params=Options(scorecam_top_k=1))
    assert both.methods() == list(ALL_METHODS)
    assert set(both.milliseconds) == set(ALL_METHODS)
    torch.testing.assert_close(both.smoothgrad[1:], alone.smoothgrad, atol=1e-6, rtol=1e-4)
    assert not torch.allclose(alone.smoothgrad, other_key.smoothgrad)
    assert both.extras["integrated_gradients.completeness"].shape == (2,)
    assert not torch.allclose(both.scorecam, one_channel.scorecam)
