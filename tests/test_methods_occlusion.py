"""Occlusion against Captum 0.9's Occlusion (baseline 0, windows of all three channels), and
through every way in: the engine, the Captum-style class, a config table and `xcnn explain`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from xcnn import Explainer, XcnnError, models, registry
from xcnn.cli import main
from xcnn.methods.occlusion import OcclusionParams
from tests.tiny_net import build

TINY = "python:tests.tiny_net:build"


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5))
    return net.eval()


def _ours(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, window: int, stride: int,
          memory_mb: int = 4096) -> torch.Tensor:
    return Explainer(model, target_layer=None).explain(
        x, targets, methods=["occlusion"], params={"occlusion": OcclusionParams(window, stride)},
        memory_mb=memory_mb).get("occlusion")


# 37×50 is not a multiple of any stride here: the last window of each row and column overhangs.
@pytest.mark.parametrize(("window", "stride"), [(32, 16), (7, 7), (5, 3)])
def test_equals_captum_occlusion(window: int, stride: int) -> None:
    from captum.attr import Occlusion

    model = _net()
    x = torch.randn(2, 3, 37, 50, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([1, 4])
    ours = _ours(model, x, targets, window, stride)
    theirs = Occlusion(model).attribute(x, target=targets, sliding_window_shapes=(3, window, window),
                                        strides=(3, stride, stride), baselines=0,
                                        perturbations_per_eval=64)
    assert ours.shape == (2, 3, 37, 50)
    scale = theirs.abs().max()
    assert scale > 0 and theirs.std() > 0.01 * scale  # a map with structure, not a constant
    assert ((ours - theirs).abs().max() / scale).item() <= 1e-5


def test_chunking_changes_nothing() -> None:
    model = _net()
    x = torch.randn(2, 3, 32, 36, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([0, 3])
    whole = _ours(model, x, targets, 8, 4)
    rows: list[int] = []
    handle = model.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    small = _ours(model, x, targets, 8, 4, memory_mb=1)  # a few windows a pass
    handle.remove()
    assert len(rows) > 10 and max(rows) < 50  # many passes (7×8 windows × 2 photos = 112 items)
    torch.testing.assert_close(small, whole, rtol=1e-5, atol=1e-6)


def test_a_window_larger_than_the_photo_hides_it_whole() -> None:
    """One window: every pixel gets y_c(x) − y_c(0)."""
    model = _net()
    x = torch.randn(1, 3, 20, 24, generator=torch.Generator().manual_seed(3))
    ours = _ours(model, x, torch.tensor([2]), 32, 16)
    with torch.no_grad():
        drop = model(x)[0, 2] - model(torch.zeros_like(x))[0, 2]
    torch.testing.assert_close(ours, drop.expand(1, 3, 20, 24), rtol=1e-6, atol=1e-6)


def test_the_captum_style_class_is_the_engines_map() -> None:
    from xcnn.methods import Occlusion

    model = _net()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    params = OcclusionParams(window=8, stride=8)
    got = Occlusion(model, params=params).attribute(x, target=3)
    torch.testing.assert_close(got, _ours(model, x, torch.tensor([3]), 8, 8), rtol=0, atol=0)
    assert registry.get("occlusion").kind == "signed" and "occlusion" in registry.method_names()


@pytest.mark.parametrize(("table", "message"), [
    ({"stride": 40}, "occlusion stride 40 is larger than the window 32"),
    ({"window": 0}, "occlusion window must be a whole number >= 1 (pixels), got 0"),
    ({"window": 2.5}, "expected int, got 2.5"),
])
def test_bad_parameters_are_one_line(table: dict, message: str) -> None:
    with pytest.raises(XcnnError, match="^methods.occlusion") as err:
        registry.parse_params(registry.get("occlusion"), table, "methods.occlusion")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_explain_cli_takes_the_window_and_stride(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    torch.save(build().state_dict(), weights)
    photo = (np.random.default_rng(0).random((24, 28, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "p.png")
    base = ["explain", str(tmp_path / "p.png"), "--model", TINY, "--weights", str(weights), "--classes", "a,b,c",
            "--target", "1", "--methods", "occlusion", "--save-raw"]
    assert main([*base, "--occlusion-window", "8", "--occlusion-stride", "4", "--out", str(tmp_path / "out")]) == 0
    lm = models.load(TINY, weights=weights, classes=["a", "b", "c"])
    x = lm.normalize(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255)
    expected = _ours(lm.model, x, torch.tensor([1]), 8, 4)[0].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "out" / "p-t1-occlusion.npy"), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected, _ours(lm.model, x, torch.tensor([1]), 32, 16)[0].numpy())  # the options count

    assert main([*base, "--occlusion-stride", "64", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert "occlusion stride 64 is larger than the window 32" in err and "\n" not in err
