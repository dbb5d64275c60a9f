"""Score-CAM, Integrated Gradients and SmoothGrad against independent answers.

Score-CAM against pytorch-grad-cam 1.5.7's ScoreCAM, Integrated Gradients against Captum 0.9's
IntegratedGradients, SmoothGrad against a loop of one sample at a time. Random-weight
torchvision models at 32×32 keep each test to seconds: Score-CAM costs one forward per channel,
so the layers are ones with 64 channels.
"""
from __future__ import annotations

import functools
import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from xcnn.errors import XcnnError
from xcnn.methods import perturbation, sampling
from xcnn.methods.context import Context, to_heat
from xcnn.methods.registry import Options
from xcnn.rules import RectifierRules


def _context(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, layer: str | None = None,
             keys: list[str] | None = None, **options: object) -> Context:
    """What the engine hands a compute function: logits and the layer's output of one plain forward."""
    captured: dict[str, torch.Tensor] = {}
    handle = None
    if layer is not None:
        module = dict(model.named_modules())[layer]
        handle = module.register_forward_hook(lambda m, i, o: captured.__setitem__("a", o.detach().clone()))
    with torch.no_grad():
        logits = model(x)
    if handle is not None:
        handle.remove()
    return Context(model=model, images=x, targets=targets, logits=logits, options=Options(**options),
                   keys=keys or [f"photo{i}" for i in range(len(x))], activation=captured.get("a"), layer=layer)


class _Rows:
    """Counts the model's forward calls and the rows they carried."""

    def __init__(self, model: nn.Module) -> None:
        self.calls: list[int] = []
        self._handle = model.register_forward_pre_hook(lambda m, args: self.calls.append(args[0].shape[0]))

    def close(self) -> None:
        self._handle.remove()


def _resnet18() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    # The first 16 channels of layer1's output are exactly 0 for every input (their last BN
    # sends them far below 0 before the residual sum and the relu): constant channels.
    bn = model.layer1[1].bn2
    with torch.no_grad():
        bn.weight[:16] = 0
        bn.bias[:16] = -1e4
    return model


def _vgg11() -> nn.Module:
    torch.manual_seed(1)
    return torchvision.models.vgg11(weights=None).eval()


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


CASES = {
    # name: (model, layer, photos); both layers have 64 channels at 32×32 input
    "resnet18": (_resnet18, "layer1", 2),  # 8×8
    "vgg11": (_vgg11, "features.2", 1),  # the first max-pool, 16×16
}


@functools.cache
def _scorecam_case(name: str) -> dict:
    """Our Score-CAM and pytorch-grad-cam's on the same model, layer, photos and targets."""
    from pytorch_grad_cam import ScoreCAM, base_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    build, layer, photos = CASES[name]
    model = build()
    x, targets = _images(photos, 0), torch.tensor([3, 500])[:photos]
    ctx = _context(model, x, targets, layer)
    sampling.footprint(model, x)  # the memory probe, once per model and size: not counted below
    rows = _Rows(model)
    cam = perturbation.channel_cam(ctx)
    rows.close()
    ours = perturbation.scorecam(ctx)

    # pytorch-grad-cam scales the layer's CAM (relu'd, at the layer's resolution) with its
    # scale_cam_image: we record that input to compare before any resampling or scaling.
    original = base_cam.scale_cam_image
    recorded: list[np.ndarray] = []
    base_cam.scale_cam_image = lambda img, size=None: (recorded.append(np.array(img)), original(img, size))[1]
    try:
        with ScoreCAM(model, [dict(model.named_modules())[layer]]) as reference:
            theirs = reference(x, [ClassifierOutputTarget(int(t)) for t in targets])
    finally:
        base_cam.scale_cam_image = original
    return {"name": name, "ctx": ctx, "cam": cam, "ours": ours, "rows": rows.calls,
           "their_cam": torch.from_numpy(recorded[0])[:, None], "theirs": theirs}


@pytest.fixture(params=list(CASES))
def scorecam_case(request: pytest.FixtureRequest) -> dict:
    return _scorecam_case(request.param)


def test_scorecam_layer_cam_equals_pytorch_grad_cam(scorecam_case: dict) -> None:
    """relu(Σ_k w_k A_k) at the layer's resolution: ours vs ScoreCAM's input to its scaling."""
    ours, theirs = scorecam_case["cam"], scorecam_case["their_cam"]
    assert ours.shape == theirs.shape
    assert theirs.max() > 0
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()


def test_scorecam_map_equals_pytorch_grad_cam(scorecam_case: dict) -> None:
    """Final maps in [0, 1], each through one scaling applied to both CAMs:
    - pytorch-grad-cam's output vs its own scaling (scale_cam_image with cv2 resize, then again,
      as BaseCAM does for one layer) applied to our layer CAM;
    - our scorecam() vs our scaling (context.to_heat) applied to pytorch-grad-cam's layer CAM."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    ctx, ours, theirs = scorecam_case["ctx"], scorecam_case["ours"], scorecam_case["theirs"]
    h, w = ctx.size
    ours_their_way = scale_cam_image(scale_cam_image(scorecam_case["cam"][:, 0].numpy(), (w, h)))
    assert np.abs(ours_their_way - theirs).max() <= 1e-5
    theirs_our_way = to_heat(scorecam_case["their_cam"], ctx.size)
    assert ours.shape == (len(ctx.images), 1, h, w)
    assert (ours - theirs_our_way).abs().max() <= 1e-5


def test_scorecam_constant_channels_share_one_forward(scorecam_case: dict) -> None:
    ctx = scorecam_case["ctx"]
    a = ctx.activation.flatten(2)
    constant = int((a.amax(dim=2) == a.amin(dim=2)).sum())
    if scorecam_case["name"] == "resnet18":
        assert constant >= 2 * 16
    batch, channels = a.shape[:2]
    # One row per non-constant (image, channel), plus the one all-zero image they all share,
    # in one batch (the default budget holds them all).
    expected = batch * channels - constant + (1 if constant else 0)
    assert scorecam_case["rows"] == [expected]


def test_scorecam_chunking_changes_nothing() -> None:
    scorecam_case = _scorecam_case("resnet18")
    ctx = scorecam_case["ctx"]
    tiny = Context(**{**ctx.__dict__, "options": Options(memory_mb=1), "extras": {}})
    rows = _Rows(ctx.model)
    out = perturbation.scorecam(tiny)
    rows.close()
    assert len(rows.calls) > 10
    assert sum(rows.calls) == sum(scorecam_case["rows"])
    assert (out - scorecam_case["ours"]).abs().max() <= 1e-6


def test_scorecam_top_k() -> None:
    """Each image's k channels of highest mean activation, softmax over those k, the rest weight
    0: against a loop of one forward per masked image."""
    model, k = _resnet18(), 6
    x, targets = _images(2, 5), torch.tensor([7, 8])
    ctx = _context(model, x, targets, "layer1", scorecam_top_k=k)
    sampling.footprint(model, x)
    rows = _Rows(model)
    out = perturbation.scorecam(ctx)
    rows.close()
    assert sum(rows.calls) <= 2 * k + 1

    a = ctx.activation
    expected = []
    with torch.no_grad():
        for b in range(2):
            best = a[b].mean(dim=(1, 2)).topk(k).indices
            scores = []
            for c in best:
                up = torch.nn.UpsamplingBilinear2d(size=(32, 32))(a[b, c][None, None])
                mask = (up - up.min()) / (up.max() - up.min() + 1e-8)
                scores.append(model(x[b:b + 1] * mask)[0, targets[b]])
            weights = torch.softmax(torch.stack(scores), dim=0)
            expected.append(F.relu((weights[:, None, None] * a[b, best]).sum(dim=0)))
    expected_map = to_heat(torch.stack(expected)[:, None], (32, 32))
    assert (out - expected_map).abs().max() <= 1e-5


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    """Random weights and random BatchNorm statistics: at initialisation (mean 0, variance 1, no
    shift) a ResNet is positively homogeneous, its gradient constant along IG's path, and IG
    exact whatever the steps; the shifts make the path integral a real one."""
    torch.manual_seed(2)
    model = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.normal_(0, 0.2)
                bn.running_var.uniform_(0.5, 1.5)
                bn.bias.normal_(0, 0.2)
    return model


def test_integrated_gradients_equals_captum(resnet: nn.Module) -> None:
    from captum.attr import IntegratedGradients

    x, targets = _images(2, 1), torch.tensor([11, 900])
    ctx = _context(resnet, x, targets)
    ours = sampling.integrated_gradients(ctx)
    theirs, delta = IntegratedGradients(resnet).attribute(x, target=targets, return_convergence_delta=True)
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()

    with torch.no_grad():
        gap = (resnet(x) - resnet(torch.zeros_like(x))).gather(1, targets[:, None])[:, 0]
    got = ctx.extras["completeness"]
    assert got.shape == (2,)
    # With 50 nodes both errors are at rounding level (~1e-6): equal only up to that.
    assert torch.allclose(got, delta.abs() / gap.abs(), rtol=0, atol=1e-5)
    # With 3 nodes the error is real, and must be Captum's convergence delta normalised.
    few = Context(**{**ctx.__dict__, "options": Options(ig_steps=3), "extras": {}})
    sampling.integrated_gradients(few)
    _, delta = IntegratedGradients(resnet).attribute(x, target=targets, n_steps=3, return_convergence_delta=True)
    expected = delta.abs() / gap.abs()
    assert expected.min() > 1e-3
    assert torch.allclose(few.extras["completeness"], expected, rtol=1e-4)

    # Chunks of one item vs one chunk, on fewer steps to keep it quick.
    few = sampling.integrated_gradients(Context(**{**ctx.__dict__, "options": Options(ig_steps=5)}))
    tiny = sampling.integrated_gradients(Context(**{**ctx.__dict__, "options": Options(ig_steps=5, memory_mb=1)}))
    assert (tiny - few).abs().max() <= 1e-6 * few.abs().max()


def _seed(seed: int, key: str, sample: int) -> int:
    # The documented scheme, written out independently: noise must stay what it was.
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}/{sample}".encode()).digest()[:8], "little") >> 1


def _smoothgrad_by_hand(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, keys: list[str],
                        n: int, sigma: float, seed: int) -> torch.Tensor:
    out = torch.zeros_like(x)
    for b in range(len(x)):
        spread = sigma * (x[b].max() - x[b].min())
        for s in range(n):
            noise = torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(_seed(seed, keys[b], s)))
            noisy = (x[b:b + 1] + noise * spread).requires_grad_(True)
            (grad,) = torch.autograd.grad(model(noisy)[0, targets[b]], noisy)
            out[b] += grad[0]
    return out / n


def test_smoothgrad_equals_loop_of_single_samples(resnet: nn.Module) -> None:
    x, targets, keys = _images(2, 2), torch.tensor([1, 2]), ["a.jpg", "b.jpg"]
    ctx = _context(resnet, x, targets, keys=keys, smoothgrad_samples=6, seed=3)
    ours = sampling.smoothgrad(ctx)
    expected = _smoothgrad_by_hand(resnet, x, targets, keys, n=6, sigma=0.15, seed=3)
    # Batched and single-item convolutions round differently: ~5e-9 here, with maps ~1e-2.
    assert (ours - expected).abs().max() <= min(1e-6, 1e-5 * expected.abs().max())


def test_smoothgrad_same_map_whatever_the_batch(resnet: nn.Module) -> None:
    x, targets, keys = _images(2, 3), torch.tensor([4, 5]), ["a", "b"]
    together = sampling.smoothgrad(_context(resnet, x, targets, keys=keys, smoothgrad_samples=4))
    alone = sampling.smoothgrad(_context(resnet, x[1:2], targets[1:2], keys=["b"], smoothgrad_samples=4))
    chunked = sampling.smoothgrad(_context(resnet, x, targets, keys=keys, smoothgrad_samples=4, memory_mb=1))
    scale = together.abs().max()
    assert (alone[0] - together[1]).abs().max() <= min(1e-6, 1e-5 * scale)
    assert (chunked - together).abs().max() <= min(1e-6, 1e-5 * scale)
    other_seed = sampling.smoothgrad(_context(resnet, x[1:2], targets[1:2], keys=["b"], smoothgrad_samples=4, seed=1))
    assert (other_seed[0] - together[1]).abs().max() > 1e-3 * scale


class _Functional(nn.Module):
    """Functional and in-place rectifiers: what the engine's rules reroute."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)
        self.fc = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.conv1(x))
        b = torch.relu_(self.conv2(a))
        return self.fc(b.mean(dim=(2, 3)))


def test_true_gradients_inside_the_engines_rules() -> None:
    torch.manual_seed(4)
    model = _Functional().eval()
    x, targets = torch.randn(2, 3, 8, 8), torch.tensor([0, 3])

    def ctx(**options: object) -> Context:
        return _context(model, x, targets, layer="conv2", keys=["p", "q"], **options)

    # Plain autograd, written out: IG from the Gauss–Legendre rule, SmoothGrad sample by sample.
    nodes, weights = np.polynomial.legendre.leggauss(8)
    ig = torch.zeros_like(x)
    for alpha, weight in zip(0.5 * (1 + nodes), 0.5 * weights):
        point = (float(alpha) * x).requires_grad_(True)
        (grad,) = torch.autograd.grad(model(point).gather(1, targets[:, None]).sum(), point)
        ig += float(weight) * grad
    ig *= x
    sg = _smoothgrad_by_hand(model, x, targets, ["p", "q"], n=4, sigma=0.15, seed=0)
    cam = perturbation.scorecam(ctx())

    with RectifierRules() as mode:
        mode.rule = "guided"
        # The rules are live: a gradient taken here is not the true one.
        point = x.clone().requires_grad_(True)
        (guided,) = torch.autograd.grad(model(point).gather(1, targets[:, None]).sum(), point)
        seen = mode.rectifiers
        got_ig = sampling.integrated_gradients(ctx(ig_steps=8))
        got_sg = sampling.smoothgrad(ctx(smoothgrad_samples=4))
        got_cam = perturbation.scorecam(ctx())
        assert mode.rectifiers == seen + 2 * 3  # only _context's three forwards went through the rules
        assert torch.overrides._get_current_function_mode() is mode
    point = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(model(point).gather(1, targets[:, None]).sum(), point)
    assert (guided - plain).abs().max() > 1e-3 * plain.abs().max()
    assert (got_ig - ig).abs().max() <= 1e-6 * ig.abs().max()
    assert (got_sg - sg).abs().max() <= 1e-6 * sg.abs().max()
    assert (got_cam - cam).abs().max() <= 1e-6


def test_bad_options_are_user_errors() -> None:
    model = _Functional().eval()
    x, targets = torch.randn(1, 3, 8, 8), torch.tensor([0])
    with pytest.raises(XcnnError, match="activations"):
        perturbation.scorecam(_context(model, x, targets))
    # A method's parameters check themselves where they are made (the config and CLI turn the
    # ValueError into one line naming the key).
    with pytest.raises(ValueError, match="integrated_gradients steps"):
        sampling.IntegratedGradientsParams(steps=0)
    with pytest.raises(ValueError, match="scorecam top_k"):
        perturbation.ScoreCAMParams(top_k=0)
    with pytest.raises(ValueError, match="smoothgrad sigma"):
        sampling.SmoothGradParams(sigma=-1.0)
    with pytest.raises(XcnnError, match="memory_mb"):
        sampling.smoothgrad(_context(model, x, targets, memory_mb=0))
