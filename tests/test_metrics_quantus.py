"""The per-map localisation and complexity metrics against Quantus 0.6.0, the reference.

Quantus gets a = r = Σ_c m_c² (B×1×H×W) and is called one sample at a time: its
normalise_by_max divides by the maximum over the whole batch otherwise. Quantus's top-k and rank
accuracy sort with an unstable argsort, so the maps compared with them have no tied relevance
(asserted); xcnn's tie rule is tested on its own, against Quantus averaged over every tie order.
"""
from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

quantus = pytest.importorskip("quantus")
torch = pytest.importorskip("torch")

from quantus.helpers.enums import ScoreDirection  # noqa: E402

from xcnn import registry  # noqa: E402
from xcnn.metrics import complexity, localisation  # noqa: E402
from xcnn.registry import MetricContext  # noqa: E402

TOL = 1e-5

# registry name -> (Quantus class, its keyword arguments)
REFERENCES: dict[str, tuple[Any, dict[str, Any]]] = {
    "top_k_intersection": (quantus.TopKIntersection, {"k": localisation.TOP_K}),
    "relevance_rank_accuracy": (quantus.RelevanceRankAccuracy, {}),
    "auc": (quantus.AUC, {}),
    "sparseness": (quantus.Sparseness, {}),
    "complexity": (quantus.Complexity, {}),
    "effective_complexity": (quantus.EffectiveComplexity, {"eps": complexity.EFFECTIVE_COMPLEXITY_EPS}),
}


def _quantus(cls: Any, a: np.ndarray, masks: np.ndarray, **kwargs: Any) -> np.ndarray:
    """Quantus's score of each map, one sample at a time; a: B×H×W, masks: B×H×W."""
    b, h, w = a.shape
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(h * w, 2))  # required, unused
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(b):
            metric = cls(disable_warnings=True, **kwargs)
            out += list(metric(model=model, x_batch=np.zeros((1, 1, h, w), np.float32), y_batch=np.array([0]),
                               a_batch=a[i:i + 1, None].astype(np.float64),
                               s_batch=masks[i:i + 1, None].astype(np.float32), channel_first=True, device="cpu"))
    return np.asarray(out, dtype=np.float64)


def _xcnn(name: str, maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The registered metric, as the worker calls it (a whole batch here)."""
    value = registry.metrics()[name].fn(maps, masks, MetricContext(method="test"))
    return np.asarray(value[name] if isinstance(value, dict) else value, dtype=np.float64)


def _r(maps: np.ndarray) -> np.ndarray:
    return np.einsum("bchw,bchw->bhw", maps, maps)


# --- maps and masks ---------------------------------------------------------------------------

def _random(rng: np.random.Generator, b: int, side: int) -> np.ndarray:
    return rng.standard_normal((b, 3, side, side)).astype(np.float32)


def _gradient_like(rng: np.random.Generator, b: int, side: int) -> np.ndarray:
    """Heavy-tailed per-pixel noise under an envelope around an object, as raw gradients look."""
    yy, xx = np.mgrid[0:side, 0:side] / side
    env = np.exp(-((yy - rng.uniform(0.3, 0.7, (b, 1, 1))) ** 2 + (xx - rng.uniform(0.3, 0.7, (b, 1, 1))) ** 2)
                 / 0.05)
    return (rng.laplace(size=(b, 3, side, side)) * (0.05 + env[:, None])).astype(np.float32)


def _gradcam_like(rng: np.random.Generator, b: int, side: int) -> np.ndarray:
    """A smooth blob from a 7×7 map upsampled bilinearly, spanning many decades (so that
    effective complexity's eps cuts it), with a little jitter that leaves no tie."""
    coarse = torch.from_numpy(rng.normal(size=(b, 1, 7, 7)).astype(np.float32))
    coarse = coarse + 4.0 * torch.exp(-((torch.arange(7) - 3.0) ** 2)[:, None] / 4 - ((torch.arange(7) - 3.0) ** 2) / 4)
    up = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    heat = torch.exp(3.0 * (up - up.amax(dim=(2, 3), keepdim=True))).numpy()  # in (0, 1], max 1
    return (heat * (1 + 0.01 * rng.random(heat.shape))).astype(np.float32)


def _masks(rng: np.random.Generator, b: int, side: int) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side]
    cy, cx = rng.uniform(0.3, 0.7, (2, b, 1, 1)) * side
    ry, rx = rng.uniform(0.15, 0.35, (2, b, 1, 1)) * side
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1  # ellipses of 7-38 % of the map


MAKERS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "random": _random, "gradient_like": _gradient_like, "gradcam_like": _gradcam_like}


def _case(kind: str, side: int, seed: int = 0, b: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    maps, masks = MAKERS[kind](rng, b, side), _masks(rng, b, side)
    r = _r(maps)
    assert all(len(np.unique(row)) == row.size for row in r.reshape(b, -1)), "a tie: the reference is ill-defined"
    return maps, masks


# --- equal to Quantus ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind,side", [("random", 32), ("gradient_like", 48), ("gradcam_like", 64),
                                       ("gradcam_like", 40)])
@pytest.mark.parametrize("name", list(REFERENCES))
def test_equals_quantus_on_r(name: str, kind: str, side: int) -> None:
    maps, masks = _case(kind, side)
    cls, kwargs = REFERENCES[name]
    ours, ref = _xcnn(name, maps, masks), _quantus(cls, _r(maps), masks, **kwargs)
    assert np.isfinite(ref).all()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL)


def test_the_cases_exercise_each_metric() -> None:
    """The comparisons above would not catch much if every map scored alike: the blob's effective
    complexity is cut by eps, and the metrics spread between the maps."""
    maps, masks = _case("gradcam_like", 64)
    assert (_xcnn("effective_complexity", maps, masks) < 64 * 64 * 0.9).all()
    for name in ("top_k_intersection", "relevance_rank_accuracy", "auc"):
        values = np.concatenate([_xcnn(name, *_case(kind, 48, seed=1)) for kind in MAKERS])
        assert np.ptp(values) > 0.1, name


def test_float64_maps_equal_quantus_too() -> None:
    maps, masks = _case("gradient_like", 32, seed=2)
    maps = maps.astype(np.float64)
    for name, (cls, kwargs) in REFERENCES.items():
        if name != "top_k_intersection":
            np.testing.assert_allclose(_xcnn(name, maps, masks), _quantus(cls, _r(maps), masks, **kwargs),
                                       rtol=0, atol=TOL, err_msg=name)


def test_top_k_at_other_k_equals_quantus() -> None:
    maps, masks = _case("gradient_like", 32, seed=3)
    rk = localisation.ranked(maps, masks)
    for k in (1, 37, 500):
        np.testing.assert_allclose(localisation.top_k_intersection(rk, k),
                                   _quantus(quantus.TopKIntersection, _r(maps), masks, k=k), rtol=0, atol=TOL)


def test_effective_complexity_at_other_eps_equals_quantus() -> None:
    maps, masks = _case("gradcam_like", 32, seed=4)
    rel = localisation.relevances(maps)
    for eps in (1e-3, 0.1, 0.5):
        np.testing.assert_array_equal(complexity.effective_complexity(rel, eps),
                                      _quantus(quantus.EffectiveComplexity, _r(maps), masks, eps=eps))


# --- the equalities of the existing metrics (no new column) -----------------------------------

def test_quantus_attribution_localisation_and_mass_accuracy_on_r_equal_p() -> None:
    for kind in MAKERS:
        maps, masks = _case(kind, 32, seed=5)
        p = _xcnn("P", maps, masks)
        r = _r(maps)
        for cls in (quantus.AttributionLocalisation, quantus.RelevanceMassAccuracy):
            np.testing.assert_allclose(_quantus(cls, r, masks), p, rtol=0, atol=TOL, err_msg=f"{cls.__name__} {kind}")


def test_quantus_relevance_mass_accuracy_on_abs_sum_equals_rma() -> None:
    for kind in MAKERS:
        maps, masks = _case(kind, 32, seed=6)
        a = np.abs(maps).sum(axis=1)
        np.testing.assert_allclose(_quantus(quantus.RelevanceMassAccuracy, a, masks), _xcnn("rma", maps, masks),
                                   rtol=0, atol=TOL, err_msg=kind)
        # and not on r: the two differ on these maps
        assert np.abs(_quantus(quantus.RelevanceMassAccuracy, _r(maps), masks) - _xcnn("rma", maps, masks)).max() > 1e-3


def test_pointing_game_equals_quantus_without_tied_maxima() -> None:
    hits, refs = [], []
    for seed in range(4):
        for kind in MAKERS:
            maps, masks = _case(kind, 32, seed=10 + seed)
            hits.append(_xcnn("pointing_hit", maps, masks))
            refs.append(_quantus(quantus.PointingGame, _r(maps), masks))
    np.testing.assert_array_equal(np.concatenate(hits), np.concatenate(refs))
    assert 0 < np.concatenate(hits).mean() < 1  # both answers occur


def test_pointing_game_differs_from_quantus_on_tied_maxima() -> None:
    # two equal maxima: the first in row-major order outside the mask, the second inside
    maps = np.full((1, 1, 4, 4), 0.1, dtype=np.float32)
    maps[0, 0, 0, 0] = maps[0, 0, 3, 3] = 1.0
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 2:, 2:] = True
    assert _xcnn("pointing_hit", maps, masks)[0] == 0.0  # xcnn: the first argmax
    assert _quantus(quantus.PointingGame, _r(maps), masks)[0] == 1.0  # Quantus: any tied maximum


# --- xcnn's tie rule ----------------------------------------------------------------------------

def _tied() -> tuple[np.ndarray, np.ndarray]:
    # r = [[25, 4, 4], [4, 1, 0.25]]: three tied 4s, two of them in the mask
    maps = np.array([[[[5.0, 2.0, 2.0], [2.0, 1.0, 0.5]]]])
    masks = np.array([[[False, True, True], [False, False, False]]])
    return maps, masks


def test_ties_count_at_their_expected_value_by_hand() -> None:
    maps, masks = _tied()
    rk = localisation.ranked(maps, masks)
    # top 2 = the 25 (outside) and one of the three 4s, in the mask 2 times in 3
    assert localisation.top_k_intersection(rk, 2)[0] == pytest.approx((2 / 3) / 2, abs=1e-15)
    assert localisation.relevance_rank_accuracy(rk)[0] == pytest.approx((2 / 3) / 2, abs=1e-15)
    assert localisation.top_k_intersection(rk, 4)[0] == pytest.approx(2 / 4, abs=1e-15)  # the whole group
    # each in-mask 4 beats 1 and 0.25, ties one outside 4 (half), loses to 25: U = 2 × 2.5 of 2 × 4
    assert localisation.mask_auc(rk)[0] == pytest.approx(5 / 8, abs=1e-15)


def test_tie_rule_is_quantus_averaged_over_every_tie_order() -> None:
    maps, masks = _tied()
    r = _r(maps)
    tied = np.argwhere(r[0] == 4.0)
    by_order: dict[str, list[float]] = {"top_k_intersection": [], "relevance_rank_accuracy": [], "auc": []}
    for order in itertools.permutations(range(len(tied))):
        broken = r.copy()
        for place, (y, x) in zip(order, tied):
            broken[0, y, x] += 1e-6 * place  # a strict order among the tied pixels, no other change
        by_order["top_k_intersection"] += list(_quantus(quantus.TopKIntersection, broken, masks, k=2))
        by_order["relevance_rank_accuracy"] += list(_quantus(quantus.RelevanceRankAccuracy, broken, masks))
        by_order["auc"] += list(_quantus(quantus.AUC, broken, masks))
    rk = localisation.ranked(maps, masks)
    assert localisation.top_k_intersection(rk, 2)[0] == pytest.approx(np.mean(by_order["top_k_intersection"]))
    assert localisation.relevance_rank_accuracy(rk)[0] == pytest.approx(np.mean(by_order["relevance_rank_accuracy"]))
    assert localisation.mask_auc(rk)[0] == pytest.approx(np.mean(by_order["auc"]))
    # sklearn's ROC counts ties half, so Quantus's AUC needs no averaging: equal on the tied map itself
    assert localisation.mask_auc(rk)[0] == pytest.approx(_quantus(quantus.AUC, r, masks)[0], abs=1e-12)


def test_tie_free_metrics_equal_quantus_on_maps_full_of_ties() -> None:
    """A relu'd CAM stored as 8-bit (a zero plateau and ~250 levels): the AUC (sklearn counts ties
    half) and the complexity metrics do not depend on the tie order, so they equal Quantus here."""
    rng = np.random.default_rng(12)
    cam = _gradcam_like(rng, 3, 48)
    maps = np.round(255 * np.maximum(cam - 0.3, 0) / 0.7) / 255
    masks = _masks(rng, 3, 48)
    assert all(len(np.unique(row)) < 300 for row in _r(maps).reshape(3, -1))
    for name in ("auc", "sparseness", "complexity", "effective_complexity"):
        cls, kwargs = REFERENCES[name]
        np.testing.assert_allclose(_xcnn(name, maps, masks), _quantus(cls, _r(maps), masks, **kwargs),
                                   rtol=0, atol=TOL, err_msg=name)


def test_uniform_map_scores_chance_whatever_the_tie_order() -> None:
    masks = _masks(np.random.default_rng(7), 2, 40)
    maps = np.full((2, 3, 40, 40), 0.3, dtype=np.float32)
    rk = localisation.ranked(maps, masks)
    chance = masks.reshape(2, -1).mean(axis=1)
    np.testing.assert_allclose(localisation.top_k_intersection(rk), chance, rtol=0, atol=1e-12)
    np.testing.assert_allclose(localisation.relevance_rank_accuracy(rk), chance, rtol=0, atol=1e-12)
    np.testing.assert_allclose(localisation.mask_auc(rk), 0.5, rtol=0, atol=1e-12)
    # Quantus refuses a uniform map; the complexity metrics' own extremes
    np.testing.assert_allclose(_xcnn("sparseness", maps, masks), 0.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(_xcnn("complexity", maps, masks), math.log(40 * 40), rtol=1e-9)
    np.testing.assert_array_equal(_xcnn("effective_complexity", maps, masks), 40 * 40)


# --- undefined cases ----------------------------------------------------------------------------

def test_all_zero_and_non_finite_maps_give_nan() -> None:
    masks = _masks(np.random.default_rng(8), 3, 32)
    maps = np.zeros((3, 1, 32, 32), dtype=np.float32)
    maps[1, 0, 3, 4] = np.nan
    maps[2, 0] = 0.5
    maps[2, 0, 1, 1] = np.inf
    for name in REFERENCES:
        assert np.isnan(_xcnn(name, maps, masks)).all(), name


def test_empty_mask_is_nan_as_in_quantus_and_a_full_mask_has_no_auc() -> None:
    maps, _ = _case("random", 32)
    masks = np.zeros((3, 32, 32), dtype=bool)
    masks[1] = True
    for name in ("top_k_intersection", "relevance_rank_accuracy", "auc"):
        cls, kwargs = REFERENCES[name]
        ours, ref = _xcnn(name, maps, masks), _quantus(cls, _r(maps), masks, **kwargs)
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref), err_msg=name)
        assert math.isnan(ours[0]) and math.isnan(ours[2])
    assert _xcnn("relevance_rank_accuracy", maps, masks)[1] == 1.0
    assert math.isnan(_xcnn("auc", maps, masks)[1])


def test_k_not_below_the_pixel_count_is_nan_where_quantus_refuses() -> None:
    maps, masks = _case("random", 16)  # 256 pixels
    assert np.isnan(localisation.top_k_intersection(localisation.ranked(maps, masks), 256)).all()
    with pytest.raises(ValueError, match="smaller than input size"):
        _quantus(quantus.TopKIntersection, _r(maps), masks, k=256)


def test_batch_does_not_change_a_maps_score() -> None:
    maps, masks = _case("gradient_like", 32, seed=9, b=4)
    for name in REFERENCES:
        together = _xcnn(name, maps, masks)
        alone = np.concatenate([_xcnn(name, maps[i:i + 1], masks[i:i + 1]) for i in range(4)])
        np.testing.assert_array_equal(together, alone, err_msg=name)


def test_sharing_a_context_changes_no_bit() -> None:
    """The worker runs the metrics in one context (one sort); turning some off, or running them in
    another order, must not move another's value."""
    maps, masks = _case("gradcam_like", 32, seed=11)
    alone = {name: _xcnn(name, maps, masks) for name in REFERENCES}
    for order in (list(REFERENCES), list(reversed(REFERENCES))):
        ctx = MetricContext(method="test")
        for name in order:
            np.testing.assert_array_equal(registry.metrics()[name].fn(maps, masks, ctx), alone[name], err_msg=name)


# --- the registry entries -----------------------------------------------------------------------

@pytest.mark.parametrize("name", list(REFERENCES))
def test_category_and_direction_are_quantus(name: str) -> None:
    entry, (cls, _) = registry.metrics()[name], REFERENCES[name]
    assert entry.category == cls.evaluation_category.value.lower()
    assert entry.higher_is_better == (cls.score_direction == ScoreDirection.HIGHER)
    assert entry.paper and entry.label


def test_new_metrics_come_after_the_thesis_metrics() -> None:
    names = list(registry.metrics())
    assert names.index("rma") < min(names.index(n) for n in REFERENCES)
