"""Ablation-CAM against pytorch-grad-cam 1.5.7's AblationCAM (ResNet-18's layer4, a VGG-like
net's last ReLU) and against a hand computation on a net that calls its layer twice, where
pytorch-grad-cam cannot go (it replaces the module, so both calls)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from xcnn import Explainer, models, registry
from xcnn.cli import main
from xcnn.methods import ablation
from xcnn.methods.context import Context, to_heat
from tests.tiny_net import build

TINY = "python:tests.tiny_net:build"


def _context(model: nn.Module, x: torch.Tensor, targets: list[int], layer: str) -> Context:
    """What the engine hands a compute function: logits and the layer's output of one plain forward."""
    captured: dict[str, torch.Tensor] = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda m, i, o: captured.__setitem__("a", o.detach().clone()))
    with torch.no_grad():
        logits = model(x)
    handle.remove()
    return Context(model=model, images=x, targets=torch.tensor(targets), logits=logits,
                   keys=[str(i) for i in range(len(x))], activation=captured["a"], layer=layer)


def _theirs(model: nn.Module, layer: str, x: torch.Tensor, targets: list[int]) -> tuple[torch.Tensor, np.ndarray]:
    """pytorch-grad-cam's layer CAM (the input of its scale_cam_image: relu'd, at the layer's
    resolution) and its final map."""
    from pytorch_grad_cam import AblationCAM, base_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    original = base_cam.scale_cam_image
    recorded: list[np.ndarray] = []
    base_cam.scale_cam_image = lambda img, size=None: (recorded.append(np.array(img)), original(img, size))[1]
    try:
        with AblationCAM(model, [dict(model.named_modules())[layer]]) as reference:
            final = reference(x, [ClassifierOutputTarget(t) for t in targets])
    finally:
        base_cam.scale_cam_image = original
    return torch.from_numpy(recorded[0])[:, None], final


def _compare(model: nn.Module, layer: str, x: torch.Tensor, targets: list[int], engine: bool = True) -> None:
    ctx = _context(model, x, targets, layer)
    ours = ablation.layer_cam(ctx)
    their_cam, their_map = _theirs(model, layer, x, targets)
    assert ours.shape == their_cam.shape and their_cam.amax() > 0
    assert ((ours - their_cam).abs().max() / their_cam.abs().max()).item() <= 1e-5
    if not engine:
        return
    # Through the engine: the final map, scaled like Grad-CAM, is pytorch-grad-cam's up to its
    # resizing (cv2 against torch's bilinear): compared where both scale the same layer CAM.
    heat = Explainer(model, target_layer=layer).explain(x, torch.tensor(targets), methods=["ablationcam"]).get("ablationcam")
    torch.testing.assert_close(heat, to_heat(their_cam, x.shape[-2:]), rtol=1e-5, atol=1e-5)
    assert their_map.shape == (len(x), *x.shape[-2:])


@pytest.mark.slow
def test_equals_pytorch_grad_cam_on_resnet18_layer4() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 40, 36, generator=torch.Generator().manual_seed(0))  # layer4: 2×2, 512 channels
    _compare(model, "layer4", x, [500], engine=False)  # the engine's path: the tests below


def _vgg_like() -> nn.Module:
    """VGG's shape in small: its last ReLU (in place, as torchvision's) has minimum 0."""
    torch.manual_seed(1)
    features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                             nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(16, 16, 3, padding=1),
                             nn.ReLU(inplace=True), nn.MaxPool2d(2))
    return nn.Sequential(features, nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 16), nn.ReLU(),
                         nn.Linear(16, 6)).eval()


def test_equals_pytorch_grad_cam_on_a_vgg_like_nets_last_relu() -> None:
    model = _vgg_like()
    x = torch.randn(3, 3, 28, 36, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(x)
    # Photo 2's target is its lowest class, whose score is below 0: the weights change sign.
    targets = [1, 4, int(logits[2].argmin())]
    assert logits[2, targets[2]] < 0
    ctx = _context(model, x, targets, "0.6")
    assert ctx.activation is not None and ctx.activation.min() == 0
    _compare(model, "0.6", x, targets)


class _Twice(nn.Module):
    """One activation module called twice, as EfficientNet-Lite0's top-level `_swish`. "skip": both
    calls have the same shape and the first one's output also reaches the head, so replacing
    both calls would run and give other numbers; "lite0": the calls' shapes differ (stem and
    head), where replacing both cannot run."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        stride, out = (1, 4) if kind == "skip" else (2, 6)
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, out, 3, padding=1, stride=stride)
        self.act = nn.ReLU6()
        self.head = nn.Linear(out, 3)

    def after(self, first: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The logits from the layer's second output ``a`` (and, for "skip", its first)."""
        return self.head((a + first if self.kind == "skip" else a).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.act(self.conv1(x))
        return self.after(first, self.act(self.conv2(first)))


@pytest.mark.parametrize("kind", ["skip", "lite0"])
def test_a_layer_called_twice_has_only_its_captured_call_ablated(kind: str) -> None:
    torch.manual_seed(3)
    model = _Twice(kind).eval()
    x = torch.randn(2, 3, 12, 10, generator=torch.Generator().manual_seed(4))
    targets = [0, 2]
    heat = Explainer(model, target_layer="act").explain(x, torch.tensor(targets), methods=["ablationcam"])

    # By hand: the engine's CAM layer is the last call, the one after conv2.
    with torch.no_grad():
        first = F.relu6(model.conv1(x))
        a = F.relu6(model.conv2(first))
        y = model.after(first, a)[torch.arange(2), targets]
        channels = a.shape[1]
        cams = []
        for b in range(2):
            ablated = a[b].repeat(channels, 1, 1, 1)
            ablated[torch.arange(channels), torch.arange(channels)] = 0
            y_k = model.after(first[b:b + 1], ablated)[:, targets[b]]
            w = (y[b] - y_k) / y[b]
            cams.append(F.relu((w[:, None, None] * a[b]).sum(0)))
    expected = to_heat(torch.stack(cams)[:, None], (12, 10))
    assert heat.layer == "act"
    torch.testing.assert_close(heat.get("ablationcam"), expected, rtol=1e-5, atol=1e-6)
    assert expected.amax() == 1


class _Concatenating(nn.Module):
    """DenseNet's way: the layer's output is concatenated with an earlier tensor, which cannot
    broadcast one photo over a chunk's rows, so every row runs the whole network."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 5, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(9, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = torch.tanh(self.conv1(x))
        return self.head(torch.cat([self.relu(self.conv2(first)), first], dim=1).mean(dim=(2, 3)))


def test_a_network_that_cannot_broadcast_runs_every_row() -> None:
    torch.manual_seed(7)
    model = _Concatenating().eval()
    x = torch.randn(2, 3, 10, 12, generator=torch.Generator().manual_seed(8))
    ctx = _context(model, x, [1, 3], "relu")
    rows: list[int] = []
    handle = model.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    ours = ablation.layer_cam(ctx)
    handle.remove()
    assert rows[-3:] == [1, 5, 5]  # a failed try at one row, then each photo's 5 channels whole
    their_cam, _ = _theirs(model, "relu", x, [1, 3])
    assert ((ours - their_cam).abs().max() / their_cam.abs().max()).item() <= 1e-5


def test_a_zero_score_gives_a_zero_map_and_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    model = build().eval()
    with torch.no_grad():
        model[-1].weight[1] = 0
        model[-1].bias[1] = 0  # y_1 is 0 for every photo: the weights are 0/0
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with caplog.at_level(logging.WARNING, logger="xcnn.methods.ablation"):
        heat = Explainer(model, target_layer="2").explain(x, 1, methods=["ablationcam"]).get("ablationcam")
    assert torch.equal(heat, torch.zeros_like(heat))
    assert "score is 0 for 1 photo(s)" in caplog.text


def test_chunking_and_the_class_change_nothing() -> None:
    from xcnn.methods import AblationCAM

    model = _vgg_like()
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(6))
    whole = Explainer(model, target_layer="0.6").explain(x, [0, 5], methods=["ablationcam"]).get("ablationcam")
    rows: list[int] = []
    handle = model.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    small = AblationCAM(model, target_layer="0.6", memory_mb=1).attribute(x, target=[0, 5])
    handle.remove()
    # The engine's forward of both photos, then one row a pass: a chunk of one photo's channels
    # runs the network up to the layer once.
    assert rows[0] == 2 and len(rows) > 4 and set(rows[1:]) == {1}
    torch.testing.assert_close(small, whole, rtol=1e-5, atol=1e-6)
    entry = registry.get("ablationcam")
    assert entry.needs_layer and entry.extra_passes and entry.kind == "heat"


def test_explain_cli(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    torch.save(build().state_dict(), weights)
    photo = (np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "p.png")
    assert main(["explain", str(tmp_path / "p.png"), "--model", TINY, "--weights", str(weights), "--classes",
                 "a,b,c", "--target", "1", "--methods", "ablationcam", "--save-raw", "--out", str(tmp_path / "out")]) == 0
    lm = models.load(TINY, weights=weights, classes=["a", "b", "c"])
    x = lm.normalize(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255)
    expected = lm.explainer().explain(x, 1, methods=["ablationcam"]).get("ablationcam")[0].numpy()
    assert expected.max() == 1
    np.testing.assert_allclose(np.load(tmp_path / "out" / "p-t1-ablationcam.npy"), expected, rtol=1e-5, atol=1e-6)
