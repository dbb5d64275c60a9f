"""The six methods computed free from the engine's one forward pass and its gradient-rule backward
pass (Input × Gradient, Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM, Eigen-CAM), against hand
computation, pytorch-grad-cam 1.5.7 and Captum 0.9, plus the pass budget of the shared engine.

What is compared with pytorch-grad-cam, exactly:
- "layer": our rectified map at the layer's resolution (``*_layer``) against its
  ``get_cam_image`` output passed through ``np.maximum(·, 0)`` (what its ``BaseCAM`` does next),
  on the same activations and gradients (the ones it captured itself), in float64;
- "final": our map (upsampled bilinearly with align_corners=False, then min–max scaled) against
  what its class returns (min–max at the layer's resolution, cv2 bilinear resize, min–max
  again). Both scalings are positive affine maps and bilinear resizing commutes with them, so
  the two pipelines agree up to its 1e-7 guards; cv2's and torch's bilinear kernels are the same
  (half-pixel centres). The models run in float64 so the comparison tests the definitions, not
  float32 summation order: in float32 its NumPy sums differ from ours by up to ~1e-5 on
  VGG-11's Grad-CAM++ (ours is the closer one to float64), so one float32 case is kept on ResNet-18.
Equality is 1e-5 max abs on [0, 1] maps, on torchvision ResNet-18 ("layer4") and VGG-11
("features") with seeded random weights.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from xcnn import Explainer, XcnnError
from xcnn.methods import cams, registry
from xcnn.methods.context import to_heat

pgc = pytest.importorskip("pytorch_grad_cam")
pytestmark = pytest.mark.filterwarnings("ignore")

SINGLE = registry.SINGLE_PASS
GRAD_CAMS = {  # ours -> (pytorch-grad-cam class name, our layer-resolution function)
    "gradcam": ("GradCAM", cams.gradcam_layer),
    "gradcam_pp": ("GradCAMPlusPlus", cams.gradcam_pp_layer),
    "xgradcam": ("XGradCAM", cams.xgradcam_layer),
    "layercam": ("LayerCAM", cams.layercam_layer),
    "hirescam": ("HiResCAM", cams.hirescam_layer),
}
TARGETS = [1, 4]


def _net(name: str, dtype: torch.dtype = torch.float64) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10).eval().to(dtype)
    return model, torch.randn(2, 3, 112, 128, dtype=dtype)


def _pgc_targets() -> list:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    return [ClassifierOutputTarget(c) for c in TARGETS]


# --- hand-checked tiny cases -------------------------------------------------------------------

# One image, two channels on a 2×2 layer.
A = torch.tensor([[[[1.0, 2.0], [3.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]]])
G = torch.tensor([[[[1.0, -1.0], [2.0, 0.0]], [[-1.0, 0.0], [0.0, 0.5]]]])


def test_cams_by_hand() -> None:
    def close(got: torch.Tensor, expected: list[list[float]]) -> None:
        torch.testing.assert_close(got[0, 0], torch.tensor(expected), atol=1e-5, rtol=1e-5)

    # Grad-CAM: w = mean G = (0.5, -0.125); L = relu(0.5·A1 - 0.125·A2)
    close(cams.gradcam_layer(A, G), [[0.375, 0.875], [1.375, 0.0]])
    # HiResCAM: relu(G1·A1 + G2·A2) = relu([[1-1, -2+0], [6+0, 0+0.5]])
    close(cams.hirescam_layer(A, G), [[0.0, 0.0], [6.0, 0.5]])
    # LayerCAM: relu(relu(G1)·A1 + relu(G2)·A2) = [[1+0, 0+0], [6+0, 0+0.5]]
    close(cams.layercam_layer(A, G), [[1.0, 0.0], [6.0, 0.5]])
    # XGrad-CAM: w1 = (1 - 2 + 6 + 0) / 6 = 5/6, w2 = (-1 + 0.5) / 4 = -1/8
    close(cams.xgradcam_layer(A, G), [[5 / 6 - 1 / 8, 10 / 6 - 1 / 8], [15 / 6 - 1 / 8, 0.0]])
    # Grad-CAM++: S1 = 6, a = G²/(2G² + S·G³): 1/8 at G=1, 4/56 at G=2; w1 = 1/8 + 2·4/56 = 15/56.
    # S2 = 4: only G=0.5 is positive, a = 0.25/(0.5 + 0.5) = 1/4, w2 = 0.5/4 = 1/8.
    w1, w2 = 15 / 56, 1 / 8
    close(cams.gradcam_pp_layer(A, G), [[w1 + w2, 2 * w1 + w2], [3 * w1 + w2, w2]])


def test_eigencam_by_hand_and_sign() -> None:
    """Rank-one activations A_k(p) = u(p)·v_k + c_k: the first principal direction is v, the
    projection |v|·(u - mean u), and its sign makes the largest magnitude positive."""
    u = torch.tensor([3.0, 0.0, 0.0, -1.0])
    v = torch.tensor([1.0, -2.0, 2.0])  # |v| = 3
    c = torch.tensor([5.0, 1.0, -1.0])
    for sign in (1.0, -1.0):  # -u gives the same map after the sign correction
        a = (sign * u[None, :] * v[:, None] + c[:, None]).reshape(1, 3, 2, 2)
        got = cams.eigencam_layer(a)
        torch.testing.assert_close(got.reshape(-1), torch.tensor([2.5 * 3, 0.0, 0.0, 0.0]), atol=1e-5, rtol=1e-5)
    # And a case where the largest magnitude is negative before the correction: |u - ū| peaks at -2.5.
    got = cams.eigencam_layer((-u[None, :] * v[:, None]).reshape(1, 3, 2, 2) + 0)
    assert got.reshape(-1)[0] > 0 and got.reshape(-1)[1:].eq(0).all()


def test_input_x_gradient_by_hand() -> None:
    """y_c = Σ w_c ⊙ x for a linear model, so x ⊙ ∂y_c/∂x = x ⊙ w_c."""
    lin = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x = torch.randn(2, 3, 2, 2)
    with Explainer(lin, target_layer=None) as ex:
        got = ex.explain(x, [2, 0], methods=["input_x_gradient"]).input_x_gradient
    w = lin[1].weight.detach()[[2, 0]].reshape(2, 3, 2, 2)
    torch.testing.assert_close(got, x * w)


# --- against pytorch-grad-cam 1.5.7 --------------------------------------------------------------

@pytest.mark.parametrize("name,layer", [("resnet18", "layer4"), pytest.param("vgg11", "features", marks=pytest.mark.slow)])
def test_gradient_cams_equal_pytorch_grad_cam(name: str, layer: str) -> None:
    model, x = _net(name)
    module = dict(model.named_modules())[layer]
    with Explainer(model, target_layer=layer) as ex:
        ours = ex.explain(x, TARGETS, methods=list(GRAD_CAMS))
    assert ours.layer == layer
    for method, (cls_name, layer_fn) in GRAD_CAMS.items():
        with getattr(pgc, cls_name)(model=model, target_layers=[module]) as cam:
            final = cam(input_tensor=x.clone(), targets=_pgc_targets())
            a = cam.activations_and_grads.activations[0]
            g = cam.activations_and_grads.gradients[0]
            theirs_layer = np.maximum(cam.get_cam_image(x, module, None, a.numpy(), g.numpy(), False), 0)
        mine = ours.get(method)
        # A map that is all zero for both would make the comparison empty.
        assert (mine.amax((1, 2, 3)) - mine.amin((1, 2, 3)) > 0.5).all(), method
        assert np.abs(mine[:, 0].numpy() - final).max() < 1e-5, method
        mine_layer = layer_fn(a, g)[:, 0].numpy()
        scale = np.abs(theirs_layer).max()
        assert scale > 0 and np.abs(mine_layer - theirs_layer).max() < 1e-9 * scale, method


def test_gradient_cams_equal_pytorch_grad_cam_in_float32() -> None:
    model, x = _net("resnet18", torch.float32)
    with Explainer(model, target_layer="layer4") as ex:
        ours = ex.explain(x, TARGETS, methods=list(GRAD_CAMS))
    for method, (cls_name, _) in GRAD_CAMS.items():
        with getattr(pgc, cls_name)(model=model, target_layers=[model.layer4]) as cam:
            final = cam(input_tensor=x.clone(), targets=_pgc_targets())
        assert np.abs(ours.get(method)[:, 0].numpy() - final).max() < 1e-5, method


class _SignCorrectedEigenCAM(pgc.EigenCAM):  # type: ignore[misc, name-defined]
    """pytorch-grad-cam's EigenCAM with its own sign-corrected projection in place of the plain one."""

    def get_cam_image(self, input_tensor, target_layer, target_category, activations, grads, eigen_smooth):  # type: ignore[no-untyped-def]
        from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

        return get_2d_projection_with_sign_correction(np.asarray(activations, dtype=np.float64))


def test_eigencam_equals_sign_corrected_projection() -> None:
    """Layer: our float64 projection vs ``get_2d_projection_with_sign_correction`` (given float64,
    so its SVD is float64 too), rectified. Final: vs its EigenCAM pipeline with that projection.
    Its plain ``EigenCAM`` has no sign correction; where the SVD's sign comes out negative its map
    shows the complement, and that happens on at least one image here (checked, not assumed)."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection, get_2d_projection_with_sign_correction

    flips = 0
    for name, layer in [("resnet18", "layer4"), ("vgg11", "features")]:
        model, x = _net(name)
        module = dict(model.named_modules())[layer]
        with Explainer(model, target_layer=layer) as ex:
            ours = ex.explain(x, TARGETS, methods=["eigencam"])
            # Class-agnostic: other targets, the same map.
            torch.testing.assert_close(ex.explain(x, [0, 0], methods=["eigencam"]).eigencam, ours.eigencam)
        with _SignCorrectedEigenCAM(model=model, target_layers=[module]) as cam:
            final = cam(input_tensor=x.clone(), targets=None)
            a = cam.activations_and_grads.activations[0]
        theirs_layer = np.maximum(get_2d_projection_with_sign_correction(a.numpy()), 0)
        mine_layer = cams.eigencam_layer(a)[:, 0].numpy()
        assert np.abs(mine_layer - theirs_layer).max() < 1e-6 * np.abs(theirs_layer).max(), name
        assert np.abs(ours.eigencam[:, 0].numpy() - final).max() < 1e-5, name
        plain = get_2d_projection(a.numpy()).reshape(2, -1)
        flips += int((np.abs(plain.min(1)) > np.abs(plain.max(1))).sum())
    assert flips > 0


def test_densenet_cams_right_where_pytorch_grad_cam_is_wrong() -> None:
    """torchvision DenseNet applies ``F.relu(features, inplace=True)`` right after the target
    layer. On the CPU pytorch-grad-cam keeps ``output.cpu().detach()``, which shares storage with
    the output, so the in-place relu overwrites its copy: it weights relu(A), not A. The reference
    here is autograd on the un-hooked model: A = model.features(x), G = ∂y_c/∂A."""
    torch.manual_seed(0)
    model = torchvision.models.densenet121(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 96, 96)
    with Explainer(model, target_layer="features") as ex:
        ours = ex.explain(x, TARGETS, methods=list(GRAD_CAMS))
    a = model.features(x).detach().requires_grad_(True)
    y = model.classifier(torch.flatten(F.adaptive_avg_pool2d(F.relu(a), 1), 1))
    (g,) = torch.autograd.grad(y[[0, 1], TARGETS].sum(), a)
    a = a.detach()
    for method, (cls_name, layer_fn) in GRAD_CAMS.items():
        reference = to_heat(layer_fn(a, g), x.shape[-2:])
        torch.testing.assert_close(ours.get(method), reference, atol=1e-5, rtol=1e-4)
        with getattr(pgc, cls_name)(model=model, target_layers=[model.features]) as cam:
            theirs = torch.from_numpy(cam(input_tensor=x.clone(), targets=_pgc_targets()))[:, None]
        # Exactly the relu(A) mistake: their map is ours computed on relu(A).
        torch.testing.assert_close(theirs, to_heat(layer_fn(F.relu(a), g), x.shape[-2:]), atol=1e-5, rtol=1e-4)
        if method in ("gradcam", "gradcam_pp", "xgradcam"):
            assert (theirs - reference).abs().max() > 0.05, method
        else:
            # G is 0 wherever A < 0 (the relu behind the layer closes there), so G⊙A = G⊙relu(A):
            # the element-wise CAMs are immune to the mistake.
            assert (theirs - reference).abs().max() < 1e-5, method


# --- against Captum 0.9 ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_input_x_gradient_equals_captum(name: str) -> None:
    """Captum's InputXGradient takes the plain gradient, which is right on every model (the
    rectifier rules only matter to Deconvnet and Guided Backprop), functional relu included."""
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with Explainer(model, target_layer=None) as ex:
        ours = ex.explain(x, TARGETS, methods=["input_x_gradient"]).input_x_gradient
    theirs = captum_attr.InputXGradient(model).attribute(x.clone(), target=torch.tensor(TARGETS))
    torch.testing.assert_close(ours, theirs)
    assert ours.abs().max() > 0


# --- the pass budget -------------------------------------------------------------------------------

@contextmanager
def _count_passes(monkeypatch: pytest.MonkeyPatch, model: nn.Module) -> Iterator[Counter[str]]:
    """Counts forward calls of ``model``, ``torch.autograd.grad`` / ``backward`` calls, and the
    most inputs one ``grad`` call asked for."""
    counts: Counter[str] = Counter()
    real_grad, real_backward = torch.autograd.grad, torch.autograd.backward

    def grad(outputs, inputs, *args, **kwargs):  # type: ignore[no-untyped-def]
        counts["grad"] += 1
        counts["grad_inputs"] = max(counts["grad_inputs"], len(inputs) if isinstance(inputs, (list, tuple)) else 1)
        return real_grad(outputs, inputs, *args, **kwargs)

    def backward(*args, **kwargs):  # type: ignore[no-untyped-def]
        counts["backward"] += 1
        return real_backward(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", grad)
    monkeypatch.setattr(torch.autograd, "backward", backward)
    handle = model.register_forward_pre_hook(lambda module, args: counts.update(["forward"]))
    try:
        yield counts
    finally:
        handle.remove()


def test_all_single_pass_methods_cost_one_forward_and_three_backward(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    with Explainer(model, target_layer="layer4") as ex, _count_passes(monkeypatch, model) as counts:
        maps = ex.explain(x, [3, 7], methods=SINGLE)
        assert maps.methods() == list(SINGLE) and len(SINGLE) == 11
        assert (counts["forward"], counts["grad"], counts["backward"]) == (1, 3, 0)
        assert counts["grad_inputs"] == 2  # the input, plus the layer on the gradient pass only
        counts.clear()
        ex.explain(x, [3, 7], methods=["eigencam"])
        assert (counts["forward"], counts["grad"], counts["backward"]) == (1, 0, 0)
        counts.clear()
        ex.explain(x, [3, 7], methods=["layercam", "input_x_gradient", "gradcam_pp"])
        assert (counts["forward"], counts["grad"], counts["backward"]) == (1, 1, 0)
    assert all(p.grad is None for p in model.parameters())


def test_guided_gradcam_reuses_gradcam(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = cams.gradcam_layer
    monkeypatch.setattr(cams, "gradcam_layer", lambda a, g: calls.append(1) or real(a, g))
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    x = torch.randn(1, 3, 64, 64)
    with Explainer(model) as ex:
        both = ex.explain(x, 2, methods=["gradcam", "guided_gradcam"])
        assert len(calls) == 1
        alone = ex.explain(x, 2, methods=["guided_gradcam"])
        assert len(calls) == 2
        guided = ex.explain(x, 2, methods=["guided_backprop"]).guided_backprop
    torch.testing.assert_close(both.guided_gradcam, alone.guided_gradcam)
    torch.testing.assert_close(both.guided_gradcam, guided * both.gradcam)


def test_every_single_pass_map_shape_range_and_batch_independence() -> None:
    torch.manual_seed(1)
    model = torchvision.models.vgg11(weights=None, num_classes=6)
    x = torch.randn(3, 3, 64, 48)
    with Explainer(model) as ex:
        full = ex.explain(x, [0, 5, 2], methods=SINGLE)
        single = ex.explain(x[1:2], 5, methods=SINGLE)
    for m in SINGLE:
        kind = registry.get(m).kind
        assert full.get(m).shape == (3, 1 if kind == "heat" else 3, 64, 48), m
        if kind == "heat":
            assert full.get(m).min() >= 0 and full.get(m).max() <= 1, m
        # Batched and single convolutions round differently in float32; XGrad-CAM divides by
        # Σ_ij A_k, tiny for a nearly dead channel, and shows that rounding at ~2e-5.
        torch.testing.assert_close(full.get(m)[1:2], single.get(m), atol=1e-4, rtol=1e-4)
    assert set(full.milliseconds) == set(SINGLE) and all(v > 0 for v in full.milliseconds.values())


def test_maps_by_name_attribute_and_errors() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    with Explainer(model) as ex:
        maps = ex.explain(torch.randn(1, 3, 32, 32), 1, methods=["layercam", "gradient"])
    assert maps.methods() == ["gradient", "layercam"]  # registry order, not the asked order
    assert maps["layercam"] is maps.get("layercam") is maps.layercam
    assert "layercam" in maps and "hirescam" not in maps
    assert maps.hirescam is None  # a method that was not asked
    with pytest.raises(XcnnError, match="not computed"):
        maps.get("hirescam")
    with pytest.raises(XcnnError, match="did you mean 'layercam'"):
        maps.get("layercm")
    with pytest.raises(XcnnError, match="did you mean 'layercam'"):
        _ = maps.layercm
    assert not hasattr(maps, "layercm")  # still an AttributeError to getattr/hasattr
    with pytest.raises(XcnnError, match="baseline"):
        maps.get("uniform")
    with Explainer(model, target_layer=None) as ex:
        with pytest.raises(XcnnError, match="layercam need a target layer"):
            ex.explain(torch.randn(1, 3, 32, 32), 1, methods=["layercam"])
        with pytest.raises(XcnnError, match="one string per image"):
            ex.explain(torch.randn(2, 3, 32, 32), 1, methods=["gradient"], keys=["a"])


def test_layer_of_a_module_called_twice_is_its_last_call() -> None:
    """torchvision's BasicBlock calls one ReLU module twice; as target layer it means its last
    call, whose output is the block's output: the same CAMs as naming the block itself.
    (pytorch-grad-cam pairs the first call's activation with the first call's gradient there.)"""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    cam_methods = [m for m in SINGLE if registry.get(m).needs_layer]
    with Explainer(model, target_layer="layer4.1.relu") as ex:
        reused = ex.explain(x, TARGETS, methods=cam_methods)
    with Explainer(model, target_layer="layer4") as ex:
        block = ex.explain(x, TARGETS, methods=cam_methods)
    for m in cam_methods:
        torch.testing.assert_close(reused.get(m), block.get(m), atol=1e-6, rtol=1e-5)
