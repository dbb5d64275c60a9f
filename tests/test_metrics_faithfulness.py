"""Deletion / insertion on a model whose answer is known: it reads only a checkerboard pattern
in the top-left quadrant, so the photo's bright squares there are all that matters."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from xcnn.errors import XcnnError
from xcnn.metrics import faithfulness as fa

H = W = 16
ON = 32  # bright squares of the 8×8 checkerboard in the quadrant
WEIGHT = 0.04


def _pattern() -> torch.Tensor:
    """+1 / −1 checkerboard on the top-left quadrant, 0 elsewhere."""
    p = torch.zeros(H, W)
    yy, xx = torch.meshgrid(torch.arange(H // 2), torch.arange(W // 2), indexing="ij")
    p[: H // 2, : W // 2] = 1.0 - 2.0 * ((yy + xx) % 2)
    return p


class Checker(nn.Module):
    """Class 0's logit = WEIGHT × Σ_c Σ x·pattern; class 1's = 0, so p(class 0) = sigmoid(logit 0).
    Blur flattens the checkerboard, so the blurred photo scores little. Counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pattern", _pattern())
        self.calls: list[int] = []  # batch size of each forward call
        self.grad_enabled: list[bool] = []
        self.training_seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        self.grad_enabled.append(torch.is_grad_enabled())
        self.training_seen.append(self.training)
        s = WEIGHT * (x.sum(1) * self.pattern).sum((1, 2))
        return torch.stack([s, torch.zeros_like(s)], 1)


def _photo() -> torch.Tensor:
    return (_pattern() > 0).float().expand(1, 3, H, W).clone()  # bright on the +1 squares, black elsewhere


def _right_map() -> np.ndarray:
    return _photo()[:, :1].numpy().astype(np.float64)  # the 32 bright squares; ties elsewhere


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def test_curves_of_the_right_map_are_known_exactly() -> None:
    steps = 20
    model = Checker()
    out = fa.deletion_insertion(model, _photo(), _right_map(), [0], settings=fa.CurveSettings(steps=steps))
    counts = np.arange(steps + 1) * (H * W) // steps
    # The bright squares go first; each takes 3 × WEIGHT off the logit (black pixels take nothing).
    want = [_sigmoid(3 * WEIGHT * (ON - min(c, ON))) for c in counts]
    np.testing.assert_allclose(out["deletion_curve"][0], want, rtol=1e-6)
    area = sum((want[k] + want[k + 1]) / 2 / steps for k in range(steps))
    assert out["deletion_auc"][0] == pytest.approx(area, rel=1e-6)
    # Insertion runs from the blurred photo (σ = 5 % of 16 px) to the photo itself.
    with torch.no_grad():
        p_blur = torch.softmax(model(fa.blur(_photo())), 1)[0, 0].item()
    assert out["insertion_curve"][0, 0] == pytest.approx(p_blur, rel=1e-6)
    assert out["insertion_curve"][0, -1] == pytest.approx(_sigmoid(3 * WEIGHT * ON), rel=1e-6)
    assert p_blur < 0.7 < _sigmoid(3 * WEIGHT * ON)


def test_right_map_beats_random_orders_both_ways() -> None:
    model = Checker()
    right = fa.deletion_insertion(model, _photo(), _right_map(), [0])
    rng = np.random.default_rng(1)
    for _ in range(3):
        noise = fa.deletion_insertion(model, _photo(), rng.random((1, 1, H, W)), [0])
        assert right["deletion_auc"][0] < noise["deletion_auc"][0] - 0.2
        assert right["insertion_auc"][0] > noise["insertion_auc"][0] + 0.05
    # The reversed map (everything but the bright squares first) is worse than random both ways.
    wrong = fa.deletion_insertion(model, _photo(), 1.0 - _right_map(), [0])
    assert wrong["deletion_auc"][0] > noise["deletion_auc"][0] + 0.05
    assert wrong["insertion_auc"][0] < noise["insertion_auc"][0] - 0.05


def test_batched_per_curve_without_gradient_in_eval_mode() -> None:
    model = Checker().train()
    images = torch.rand(3, 3, H, W)
    maps = np.random.default_rng(0).random((3, 3, H, W))
    one = fa.deletion_insertion(model, images, maps, [0, 1, 0], settings=fa.CurveSettings(steps=7, curves_per_pass=1))
    # the 9 shared end points (photo, all deleted, blurred of 3 photos) in passes of at most
    # 8 images, then one pass per curve: its 6 inner points
    assert model.calls == [8, 1] + [6] * 6
    assert not any(model.grad_enabled) and not any(model.training_seen)
    assert model.training  # the caller's flag is back
    model.calls.clear()
    five = fa.deletion_insertion(model, images, maps, [0, 1, 0], settings=fa.CurveSettings(steps=7, curves_per_pass=5))
    assert model.calls == [9, 30, 6]  # whole curves only: never a curve split between calls
    for k in one:
        np.testing.assert_array_equal(one[k], five[k])


def test_several_methods_share_end_points_and_alike_orders() -> None:
    model = Checker()
    images = torch.rand(2, 3, H, W)
    rng = np.random.default_rng(5)
    a, b = rng.random((2, 1, H, W)), rng.random((2, 3, H, W))
    alone = {name: fa.deletion_insertion(model, images, m, [0, 0], ["p", "q"], fa.CurveSettings(steps=5))
             for name, m in (("a", a), ("b", b))}
    model.calls.clear()
    together = fa.deletion_insertion(model, images, {"a": a, "b": b, "a_rescaled": 4.0 * a}, [0, 0],
                                     ["p", "q"], fa.CurveSettings(steps=5))
    for name in ("a", "b"):
        for k in alone[name]:
            np.testing.assert_allclose(together[name][k], alone[name][k], rtol=1e-12, atol=1e-15)
    for k in together["a"]:  # the same pixel order: the same curves, not computed twice
        np.testing.assert_array_equal(together["a_rescaled"][k], together["a"][k])
    assert sum(model.calls) == 3 * 2 + 2 * 2 * 2 * (5 - 1)  # ends of 2 photos + inner points of 2 maps × 2 photos
    # the ends are the photo's own probability (deletion starts, insertion ends there)
    p_photo = torch.softmax(model(images), 1)[:, 0].double().numpy()
    np.testing.assert_allclose(together["b"]["deletion_curve"][:, 0], p_photo, rtol=1e-12)
    np.testing.assert_allclose(together["b"]["insertion_curve"][:, -1], p_photo, rtol=1e-12)


def test_constant_map_order_depends_on_the_seed_and_key_only() -> None:
    const = np.ones((1, 1, H, W))
    a = fa.pixel_order(const, seed=0, keys=["img7"])
    assert np.array_equal(a, fa.pixel_order(const * 5, seed=0, keys=["img7"]))  # scale is no information
    assert not np.array_equal(a, fa.pixel_order(const, seed=1, keys=["img7"]))
    assert not np.array_equal(a, fa.pixel_order(const, seed=0, keys=["img8"]))
    assert sorted(a[0]) == list(range(H * W))
    # The same key gives the same order wherever the map sits in its batch.
    batch = fa.pixel_order(np.ones((2, 1, H, W)), seed=0, keys=["other", "img7"])
    assert np.array_equal(batch[1], a[0])
    # Curves follow: same seed -> same curve, another seed -> another curve.
    model, x = Checker(), _photo()
    c0 = fa.deletion_insertion(model, x, const, [0], ["img7"], fa.CurveSettings(seed=0))["deletion_curve"]
    np.testing.assert_array_equal(c0, fa.deletion_insertion(model, x, const, [0], ["img7"])["deletion_curve"])
    other = fa.deletion_insertion(model, x, const, [0], ["img7"], fa.CurveSettings(seed=3))["deletion_curve"]
    assert not np.array_equal(c0, other)


def test_order_is_by_energy_over_channels_ties_only_shuffled() -> None:
    m = np.zeros((1, 2, 2, 3))
    m[0, 0, 0, 2] = 3.0  # energy 9
    m[0, :, 1, 0] = -2.0  # energy 8 (2² + 2²), sign ignored
    m[0, 1, 0, 0] = 1.0  # energy 1; three pixels tie at 0
    order = fa.pixel_order(m, seed=0)[0]
    assert list(order[:3]) == [2, 3, 0] and sorted(order[3:]) == [1, 4, 5]


def test_auc_is_the_trapezoid_on_unit_interval() -> None:
    assert fa.auc(np.array([[0.0, 1.0]]))[0] == 0.5
    assert fa.auc(np.array([[0.3] * 21]))[0] == pytest.approx(0.3)
    assert fa.auc(np.array([[1.0, 0.0, 0.0, 0.0]]))[0] == pytest.approx(1 / 6)


def test_blur_is_per_channel_in_input_space() -> None:
    x = torch.zeros(1, 2, 20, 10)
    x[0, 0] = -1.5  # a constant channel stays constant
    x[0, 1, 10, 5] = 1.0
    y = fa.blur(x)
    assert torch.allclose(y[0, 0], torch.full((20, 10), -1.5))
    assert y[0, 1].sum() == pytest.approx(1.0, rel=1e-4) and y[0, 1].max() < 0.2  # σ = 1 px (5 % of 20)
    assert y.dtype == x.dtype


def test_bad_inputs_are_clear_errors() -> None:
    model = Checker()
    with pytest.raises(XcnnError, match="maps"):
        fa.deletion_insertion(model, _photo(), np.ones((1, 1, H, W + 1)), [0])
    with pytest.raises(XcnnError, match="target"):
        fa.deletion_insertion(model, _photo(), _right_map(), [0, 1])
    with pytest.raises(XcnnError, match="key"):
        fa.deletion_insertion(model, _photo(), _right_map(), [0], ["a", "b"])
    with pytest.raises(XcnnError, match="steps"):
        fa.CurveSettings(steps=0)
