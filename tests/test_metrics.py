"""Metrics on hand-made maps and masks whose answers are worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xcnn import metrics
from xcnn.errors import XcnnError


def _mask(rows: list[list[int]]) -> np.ndarray:
    return np.array([rows], dtype=bool)


def test_uniform_map_scores_the_mask_fraction_exactly() -> None:
    mask = np.zeros((1, 10, 10), dtype=bool)
    mask[0, 2:5, 3:9] = True  # 18 of 100 pixels
    uniform = np.full((1, 3, 10, 10), -0.7)
    assert metrics.concentration(uniform, mask)[0] == pytest.approx(0.18, abs=1e-15)
    assert metrics.chance_level(mask)[0] == pytest.approx(0.18, abs=1e-15)
    assert metrics.relevance_mass_accuracy(uniform, mask)[0] == pytest.approx(0.18, abs=1e-15)


def test_map_all_inside_mask_scores_one() -> None:
    mask = np.zeros((1, 6, 6), dtype=bool)
    mask[0, 1:4, 1:4] = True
    m = np.zeros((1, 1, 6, 6))
    m[0, 0, 2, 2] = 5.0
    m[0, 0, 1, 3] = -1.0
    assert metrics.concentration(m, mask)[0] == 1.0
    assert metrics.relevance_mass_accuracy(m, mask)[0] == 1.0
    assert bool(metrics.pointing_game(m, mask)[0])


def test_two_by_two_by_hand() -> None:
    # channel 0 = [[1, 2], [3, 4]], channel 1 = [[0, -1], [0, 0]]; mask = top row.
    m = np.array([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, -1.0], [0.0, 0.0]]]])
    mask = _mask([[1, 1], [0, 0]])
    e, total = metrics.energy(m, mask)
    # E = 1 + 4 + 1 = 6; E_celk = 1 + 4 + 9 + 16 + 1 = 31
    assert e[0] == 6.0 and total[0] == 31.0
    assert metrics.concentration(m, mask)[0] == pytest.approx(6 / 31)
    # |I| summed over channels: [[1, 3], [3, 4]] -> RMA = 4 / 11
    assert metrics.relevance_mass_accuracy(m, mask)[0] == pytest.approx(4 / 11)
    # energy per pixel [[1, 5], [9, 16]]: the maximum (bottom right) is outside the mask
    assert not metrics.pointing_game(m, mask)[0]
    assert metrics.chance_level(mask)[0] == 0.5


def test_all_zero_map_gives_nan_not_zero_or_crash() -> None:
    mask = _mask([[1, 0], [0, 0]])
    zero = np.zeros((1, 3, 2, 2))
    assert math.isnan(metrics.concentration(zero, mask)[0])
    assert math.isnan(metrics.relevance_mass_accuracy(zero, mask)[0])
    e, total = metrics.energy(zero, mask)
    assert e[0] == 0.0 and total[0] == 0.0
    assert math.isnan(metrics.pointing_game(zero, mask)[0])


def test_batched_rows_are_independent_and_torch_is_accepted() -> None:
    masks = np.stack([np.eye(3, dtype=bool), np.ones((3, 3), dtype=bool), np.eye(3, dtype=bool)])
    maps = np.zeros((3, 1, 3, 3))
    maps[0, 0] = 1.0  # uniform: P = 3/9
    maps[1, 0, 0, 1] = 2.0  # all inside a full mask: P = 1
    # row 2 all zero: NaN
    p = metrics.concentration(torch.from_numpy(maps).float(), torch.from_numpy(masks))
    assert p[0] == pytest.approx(1 / 3) and p[1] == 1.0 and math.isnan(p[2])


def test_pointing_game_sums_energy_over_channels() -> None:
    # pixel (0,0) has the largest single value (3) but pixel (1,1) the largest energy 2²+2²+2² = 12 > 9
    m = np.zeros((1, 3, 2, 2))
    m[0, 0, 0, 0] = 3.0
    m[0, :, 1, 1] = -2.0
    assert metrics.pointing_game(m, _mask([[0, 0], [0, 1]]))[0]
    assert not metrics.pointing_game(m, _mask([[1, 0], [0, 0]]))[0]


def test_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(XcnnError, match="B×C×H×W"):
        metrics.concentration(np.zeros((1, 3, 4, 4)), np.zeros((1, 4, 5), dtype=bool))


def test_scores_in_one_pass_agree_with_the_single_metrics() -> None:
    rng = np.random.default_rng(3)
    maps = rng.normal(size=(4, 3, 5, 7))
    maps[2] = 0.0
    masks = rng.random((4, 5, 7)) < 0.3
    s = metrics.scores(maps, masks)
    e, total = metrics.energy(maps, masks)
    np.testing.assert_array_equal(s["E"], e)
    np.testing.assert_array_equal(s["E_celk"], total)
    np.testing.assert_array_equal(s["P"], metrics.concentration(maps, masks))
    np.testing.assert_array_equal(s["rma"], metrics.relevance_mass_accuracy(maps, masks))
    np.testing.assert_array_equal(s["chance"], metrics.chance_level(masks))
    np.testing.assert_array_equal(s["pointing_hit"], metrics.pointing_game(maps, masks))
    assert math.isnan(s["pointing_hit"][2])  # undefined for the all-zero map


def test_package_keeps_the_old_module_api() -> None:
    from xcnn.metrics import localisation

    for name in ("energy", "concentration", "chance_level", "pointing_game", "relevance_mass_accuracy", "scores"):
        assert getattr(metrics, name) is getattr(localisation, name)
    assert metrics.sanity.spearman is not None and metrics.baselines.uniform is not None  # loaded on access
    with pytest.raises(AttributeError):
        metrics.nothing_here  # noqa: B018
