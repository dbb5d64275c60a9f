"""RISE against TorchRay 1.0.0.2's ``rise`` given the same masks, its masks against the paper's
code (skimage's resize), and its seeding: a photo's map depends on its key, never on its batch
or the chunking."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import xcnn.methods
from xcnn import Explainer, XcnnError, models, registry
from xcnn.cli import main
from xcnn.methods import rise
from xcnn.methods.context import Context
from xcnn.methods.rise import RISEParams
from tests.tiny_net import build

TINY = "python:tests.tiny_net:build"


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5))
    return net.eval()


def _explain(model: nn.Module, x: torch.Tensor, targets: list[int], keys: list[str], params: RISEParams,
             memory_mb: int = 4096) -> torch.Tensor:
    return Explainer(model, target_layer=None).explain(
        x, torch.tensor(targets), methods=["rise"], params={"rise": params}, keys=keys, memory_mb=memory_mb).get("rise")


@pytest.mark.filterwarnings("ignore:open_text is deprecated:DeprecationWarning")  # torchray's import
def test_equals_torchray_given_the_same_masks() -> None:
    """TorchRay sums sigmoid(f(x ⊙ M_i)) M_i / N: with f = logit ∘ softmax it is S·p."""
    from torchray.attribution.rise import rise as torchray_rise

    model = _net()
    x = torch.randn(2, 3, 30, 41, generator=torch.Generator().manual_seed(0))  # non-square, not a multiple of c
    targets, keys = torch.tensor([1, 4]), ["cat.jpg", "dog.jpg"]
    params = RISEParams(n=300, cells=5, p=0.4, seed=3)
    with torch.no_grad():
        logits = model(x)
    ours = rise.saliency(Context(model=model, images=x, targets=targets, logits=logits, keys=keys, params=params))
    assert ours.shape == (2, 1, 30, 41)

    def softmax_logit(z: torch.Tensor) -> torch.Tensor:
        return torch.logit(torch.softmax(model(z), dim=1))

    for b, key in enumerate(keys):
        masks = xcnn.methods.rise_masks(params.n, params.cells, params.p, (30, 41), params.seed, key=key)
        theirs = torchray_rise(softmax_logit, x[b:b + 1], num_masks=params.n, filter_masks=masks, batch_size=64)
        theirs = theirs[0, int(targets[b])]
        assert theirs.max() - theirs.min() > 0.1 * theirs.max()  # a map with structure, not a constant
        assert ((ours[b, 0] * params.p - theirs).abs().max() / theirs.abs().max()).item() <= 1e-5


def test_masks_are_the_papers() -> None:
    """Grid i upsampled by the paper's code (skimage resize, order 1, mode "reflect") to
    (c+1)·⌈H/c⌉ × (c+1)·⌈W/c⌉, cropped at shift i."""
    skimage = pytest.importorskip("skimage.transform")
    n, cells, p, size, seed, key = 6, 4, 0.5, (13, 22), 5, "k"
    cell = (4, 6)  # ⌈13/4⌉, ⌈22/4⌉
    draws = rise._draw(n, cells, p, cell, seed, key)
    masks = xcnn.methods.rise_masks(n, cells, p, size, seed, key=key)
    assert masks.shape == (n, 1, *size) and masks.dtype == torch.float32
    for i in range(n):
        up = skimage.resize(draws.grids[i].numpy().astype(np.float64), ((cells + 1) * cell[0], (cells + 1) * cell[1]),
                            order=1, mode="reflect", anti_aliasing=False)
        dy, dx = (int(s) for s in draws.shifts[i])
        assert 0 <= dy < cell[0] and 0 <= dx < cell[1]
        np.testing.assert_allclose(masks[i, 0].numpy(), up[dy:dy + size[0], dx:dx + size[1]], atol=1e-6)


def test_masks_depend_on_seed_key_and_index_only() -> None:
    masks = xcnn.methods.rise_masks(200, 7, 0.3, 28, 0, key="a")
    assert 0 <= masks.min() and masks.max() <= 1
    assert 0.25 < float(masks.mean()) < 0.35  # each cell kept with probability p
    torch.testing.assert_close(xcnn.methods.rise_masks(5, 7, 0.3, 28, 0, key="a"), masks[:5], rtol=0, atol=0)
    assert not torch.equal(xcnn.methods.rise_masks(5, 7, 0.3, 28, 0, key="b"), masks[:5])
    assert not torch.equal(xcnn.methods.rise_masks(5, 7, 0.3, 28, 1, key="a"), masks[:5])
    assert len({m.numpy().tobytes() for m in masks}) == 200


def test_a_photos_map_never_depends_on_its_batch_or_chunks() -> None:
    model = _net()
    x = torch.randn(3, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    params = RISEParams(n=60, cells=4)
    batch = _explain(model, x, [0, 1, 2], ["a", "b", "c"], params)
    alone = _explain(model, x[1:2], [1], ["b"], params, memory_mb=1)  # a few masks a pass
    torch.testing.assert_close(alone, batch[1:2], rtol=1e-5, atol=1e-6)
    other_key = _explain(model, x[1:2], [1], ["b2"], params)
    assert (other_key - alone).abs().max() > 1e-3  # other masks, another map


def test_the_map_is_s_scaled_to_0_1_and_the_class_is_the_engines() -> None:
    from xcnn.methods import RISE

    model = _net()
    x = torch.randn(2, 3, 24, 20, generator=torch.Generator().manual_seed(2))
    params = RISEParams(n=40, cells=3, p=0.5)
    heat = RISE(model, params=params).attribute(x, target=[2, 3], keys=["a", "b"])
    with torch.no_grad():
        logits = model(x)
    s = rise.saliency(Context(model=model, images=x, targets=torch.tensor([2, 3]), logits=logits, keys=["a", "b"],
                              params=params))
    lo, hi = s.amin(dim=(2, 3), keepdim=True), s.amax(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(heat, (s - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    assert heat.shape == (2, 1, 24, 20) and registry.get("rise").kind == "heat"


@pytest.mark.parametrize(("table", "message"), [
    ({"p": 0}, "rise p must be a probability in (0, 1], got 0"),
    ({"p": 1.5}, "rise p must be a probability in (0, 1], got 1.5"),
    ({"n": 0}, "rise n must be a whole number >= 1, got 0"),
    ({"cells": -2}, "rise cells must be a whole number >= 1, got -2"),
    ({"seed": -1}, "rise seed must be a whole number >= 0, got -1"),
])
def test_bad_parameters_are_one_line(table: dict, message: str) -> None:
    with pytest.raises(XcnnError, match="^methods.rise") as err:
        registry.parse_params(registry.get("rise"), table, "methods.rise")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_explain_cli_takes_n_and_cells(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    torch.save(build().state_dict(), weights)
    photo = (np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "p.png")
    base = ["explain", str(tmp_path / "p.png"), "--model", TINY, "--weights", str(weights), "--classes", "a,b,c",
            "--target", "2", "--methods", "rise", "--save-raw"]
    assert main([*base, "--rise-n", "30", "--rise-cells", "3", "--out", str(tmp_path / "out")]) == 0
    lm = models.load(TINY, weights=weights, classes=["a", "b", "c"])
    x = lm.normalize(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255)
    expected = _explain(lm.model, x, [2], ["0"], RISEParams(n=30, cells=3))  # the engine's default key
    np.testing.assert_allclose(np.load(tmp_path / "out" / "p-t2-rise.npy"), expected[0].numpy(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(expected, _explain(lm.model, x, [2], ["0"], RISEParams(n=30, cells=5)))
    assert main([*base, "--rise-p", "0", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert "rise p must be a probability in (0, 1], got 0" in err and "\n" not in err
