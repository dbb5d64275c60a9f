"""Localisation metrics of saliency maps against object masks (energy concentration and friends).

Every function is pure and batched: ``maps`` is B×C×H×W (C = 3 for gradient maps, 1 for
Grad-CAM), ``masks`` is B×H×W (bool or 0/1), both NumPy arrays or torch tensors. Squares are
taken in the map's dtype (float32 or float64), every sum in float64. Results are float64 / bool
NumPy arrays of length B.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xcnn.errors import XcnnError
from xcnn.registry import MetricContext, metric

ArrayLike = Any  # np.ndarray or torch.Tensor


def _as_numpy(x: ArrayLike) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, wherever it lives
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check(maps: ArrayLike, masks: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    m = _as_numpy(maps)
    if m.dtype not in (np.float32, np.float64):
        m = m.astype(np.float64)
    k = _as_numpy(masks).astype(bool, copy=False)
    if m.ndim != 4 or k.ndim != 3 or m.shape[0] != k.shape[0] or m.shape[2:] != k.shape[1:]:
        raise XcnnError(
            f"maps must be B×C×H×W and masks B×H×W of the same B, H, W; "
            f"got maps {tuple(m.shape)} and masks {tuple(k.shape)}"
        )
    return m, k


def _energy_px(m: np.ndarray) -> np.ndarray:
    """B×H×W energy Σ_c m_c² per pixel, in the map's dtype (three terms: float32 keeps up)."""
    per_pixel: np.ndarray = np.einsum("bchw,bchw->bhw", m, m)
    return per_pixel


def _inside_and_total(per_pixel: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel values summed (float64) inside the mask and over the whole map; multiplying
    by a 0/1 mask is exact."""
    total = per_pixel.sum(axis=(1, 2), dtype=np.float64)
    inside = (per_pixel * k.astype(per_pixel.dtype)).sum(axis=(1, 2), dtype=np.float64)
    return inside, total


def energy(maps: ArrayLike, masks: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(E, E_celk): squared map summed inside the mask, and over the whole map."""
    m, k = _check(maps, masks)
    return _inside_and_total(_energy_px(m), k)


def concentration(maps: ArrayLike, masks: ArrayLike) -> np.ndarray:
    """P = E / E_celk; NaN where the map is all zero (no energy to concentrate)."""
    e, total = energy(maps, masks)
    return _ratio(e, total)


def chance_level(masks: ArrayLike) -> np.ndarray:
    """Mask area fraction: the P that a uniform map scores."""
    k = _as_numpy(masks).astype(bool, copy=False)
    if k.ndim != 3:
        raise XcnnError(f"masks must be B×H×W, got {tuple(k.shape)}")
    share: np.ndarray = k.reshape(k.shape[0], -1).mean(axis=1, dtype=np.float64)
    return share


def pointing_game(maps: ArrayLike, masks: ArrayLike) -> np.ndarray:
    """1.0 where the pixel of maximum energy (squared map summed over channels) is in the mask,
    0.0 where it is not, NaN for an all-zero map (no maximum worth pointing with; see
    ``concentration``'s NaN). float64.

    Ties go to the first maximal pixel in row-major order, so the answer is deterministic.
    """
    m, k = _check(maps, masks)
    per_pixel = _energy_px(m)
    best = per_pixel.reshape(m.shape[0], -1).argmax(axis=1)
    hit: np.ndarray = k.reshape(k.shape[0], -1)[np.arange(k.shape[0]), best].astype(np.float64)
    hit[~(per_pixel.sum(axis=(1, 2), dtype=np.float64) > 0)] = np.nan
    return hit


def relevance_mass_accuracy(maps: ArrayLike, masks: ArrayLike) -> np.ndarray:
    """RMA = Σ|I|·M / Σ|I| (unsquared, summed over channels); NaN for an all-zero map."""
    m, k = _check(maps, masks)
    inside, total = _inside_and_total(np.abs(m).sum(axis=1), k)
    return _ratio(inside, total)


def scores(maps: ArrayLike, masks: ArrayLike) -> dict[str, np.ndarray]:
    """Every metric above for the same maps (what the registered metrics below read): ``E,
    E_celk, P, chance, pointing_hit, rma``, each of length B."""
    m, k = _check(maps, masks)
    e, total = energy(m, k)
    return {"E": e, "E_celk": total, "P": _ratio(e, total), "chance": chance_level(k),
            "pointing_hit": pointing_game(m, k), "rma": relevance_mass_accuracy(m, k)}


# --- the registered per-map metrics: every record gets each (xcnn.registry.metric) --------------

def _shared(maps: ArrayLike, masks: ArrayLike, ctx: MetricContext) -> dict[str, np.ndarray]:
    """``scores`` once per call, whichever of these metrics asks first (they share one pass)."""
    if "localisation" not in ctx.cache:
        ctx.cache["localisation"] = scores(maps, masks)
    shared: dict[str, np.ndarray] = ctx.cache["localisation"]
    return shared


@metric("P", label="Energy concentration P", paper="Explainable Convolutional Neural Networks (Brno, 2021)",
        fields=("E", "E_celk"))
def energy_concentration(maps: ArrayLike, masks: ArrayLike, ctx: MetricContext) -> dict[str, np.ndarray]:
    """P = E / E_celk, with E and E_celk (NaN where the map is all zero)."""
    sc = _shared(maps, masks, ctx)
    return {"P": sc["P"], "E": sc["E"], "E_celk": sc["E_celk"]}


@metric("chance", label="Chance level", higher_is_better=None)
def chance(maps: ArrayLike, masks: ArrayLike, ctx: MetricContext) -> np.ndarray:
    """The dilated mask's area fraction: the P of a uniform map."""
    return _shared(maps, masks, ctx)["chance"]


@metric("lift", label="Lift P / chance")
def lift(maps: ArrayLike, masks: ArrayLike, ctx: MetricContext) -> np.ndarray:
    """P / chance; NaN where the mask vanished at this size."""
    sc = _shared(maps, masks, ctx)
    return _ratio(sc["P"], sc["chance"])


@metric("pointing_hit", label="Pointing game", paper="Zhang et al. 2018", boolean=True)
def pointing_hit(maps: ArrayLike, masks: ArrayLike, ctx: MetricContext) -> np.ndarray:
    """1.0 where the most energetic pixel lies in the mask, 0.0 elsewhere, NaN for an all-zero map."""
    return _shared(maps, masks, ctx)["pointing_hit"]


@metric("rma", label="Relevance mass accuracy", paper="Arras et al. 2022")
def rma(maps: ArrayLike, masks: ArrayLike, ctx: MetricContext) -> np.ndarray:
    """Σ|I|·M / Σ|I| (unsquared, summed over channels)."""
    return _shared(maps, masks, ctx)["rma"]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


# --- Quantus's localisation metrics on the relevance r (Hedström et al. 2023) ------------------
#
# Each equals Quantus 0.6.0's class given a = r (B×1×H×W), called one sample at a time (its
# normalise_by_max divides by r's maximum, which changes no order). Quantus sorts with an unstable
# argsort, so on tied values its answer depends on the tie order; xcnn counts a tied group at its
# expected value under a random order (docs/METHOD.md, section 3), which equals Quantus wherever
# there is no tie.

log = logging.getLogger(__name__)

TOP_K = 1000  # top_k_intersection's default k, Quantus's ([metrics.top_k_intersection] k)

_warned_k: set[tuple[int, int]] = set()


def relevance(maps: ArrayLike) -> np.ndarray:
    """r = Σ_c m_c², B×H×W in the map's dtype: the per-pixel energy P reads (for a heat map, m²),
    computed exactly as ``scores`` does, so every metric reads the same numbers."""
    m = _as_numpy(maps)
    if m.dtype not in (np.float32, np.float64):
        m = m.astype(np.float64)
    if m.ndim != 4:
        raise XcnnError(f"maps must be B×C×H×W, got {tuple(m.shape)}")
    return _energy_px(m)


def relevances(maps: ArrayLike) -> dict[str, np.ndarray]:
    """``r`` B×N, each map's relevance flattened (in the map's dtype); ``top`` its maximum;
    ``valid`` B bool, False for an all-zero or non-finite map (NaN wins the maximum)."""
    r = relevance(maps)
    r = r.reshape(r.shape[0], -1)
    top = r.max(axis=1) if r.shape[1] else np.zeros(r.shape[0], dtype=r.dtype)
    return {"r": r, "top": top, "valid": np.isfinite(top) & (top > 0)}


def ranked(maps: ArrayLike, masks: ArrayLike, rel: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The relevance of each map sorted ascending, with the mask in the same order: what the
    rank-based metrics (top-k, rank accuracy, AUC, Gini) read, sorted once.

    ``v`` B×N sorted r (in r's dtype); ``inside`` B×N bool; ``before`` B×(N+1) in-mask pixels
    before each position; ``top`` and ``valid`` as ``relevances``'s (``rel``: those of these maps, if known)."""
    m, k = _check(maps, masks)
    rel = relevances(m) if rel is None else rel
    r = rel["r"]
    inside_px = k.reshape(k.shape[0], -1)
    # One sort of (r's bits, mask bit): r ≥ 0, so its IEEE bits order as its values, and the sign
    # bit they never use makes room for the mask bit. Sorting values is faster than argsort.
    utype = np.uint32 if r.dtype == np.float32 else np.uint64
    one = utype(1)
    bits: np.ndarray = r.view(utype)
    key = np.sort(np.left_shift(bits, one) | inside_px.astype(utype), axis=1)
    inside = (key & one).astype(bool)
    v = np.right_shift(key, one).view(r.dtype)
    before = np.zeros((v.shape[0], v.shape[1] + 1), dtype=np.int64)
    np.cumsum(inside, axis=1, out=before[:, 1:])
    return {"v": v, "inside": inside, "before": before, "top": rel["top"], "valid": rel["valid"]}


def _relevances(maps: ArrayLike, ctx: MetricContext) -> dict[str, np.ndarray]:
    if "relevance" not in ctx.cache:
        ctx.cache["relevance"] = relevances(maps)
    rel: dict[str, np.ndarray] = ctx.cache["relevance"]
    return rel


def _ranked(maps: ArrayLike, masks: ArrayLike, ctx: MetricContext) -> dict[str, np.ndarray]:
    if "ranked" not in ctx.cache:
        ctx.cache["ranked"] = ranked(maps, masks, _relevances(maps, ctx))
    rk: dict[str, np.ndarray] = ctx.cache["ranked"]
    return rk


def _expected_hits(rk: dict[str, np.ndarray], k: np.ndarray) -> np.ndarray:
    """In-mask pixels among the k most relevant of each map (k: B ints, 0 < k ≤ N), a tied group
    that straddles the cut counting at its expected value: its in-mask share times the places
    left for it."""
    v, before = rk["v"], rk["before"]
    rows = np.arange(v.shape[0])
    n = v.shape[1]
    cut = n - k  # ascending order: the top k are positions cut..n-1
    at = v[rows, cut][:, None]
    lo = (v < at).sum(axis=1)  # the tied group of the cut is positions lo..hi-1
    hi = (v <= at).sum(axis=1)
    group = before[rows, hi] - before[rows, lo]
    hits: np.ndarray = (before[:, n] - before[rows, hi]) + (hi - cut) * group / np.maximum(hi - lo, 1)  # ≥ 1 but on NaN maps
    return hits


def top_k_intersection(rk: dict[str, np.ndarray], k: int = TOP_K) -> np.ndarray:
    """Share of the k most relevant pixels that lie in the mask (Theiner et al. 2021); NaN for an
    empty mask, an all-zero map, or a map of no more than k pixels (Quantus refuses k ≥ H·W)."""
    b, n = rk["v"].shape
    out = np.full(b, np.nan)
    if k <= 0:
        raise XcnnError(f"top_k_intersection: k = {k}; give a positive number of pixels")
    if k >= n:
        if (k, n) not in _warned_k:
            _warned_k.add((k, n))
            log.warning("top_k_intersection: k = %d is not below the map's %d pixels; NaN at this size", k, n)
        return out
    ok = rk["valid"] & (rk["before"][:, n] > 0)
    hits = _expected_hits(rk, np.full(b, k))
    out[ok] = hits[ok] / k
    return out


def relevance_rank_accuracy(rk: dict[str, np.ndarray]) -> np.ndarray:
    """Share of the |s| most relevant pixels that lie in the mask s (Arras et al. 2022); NaN for an
    empty mask or an all-zero map."""
    b, n = rk["v"].shape
    size = rk["before"][:, n]
    ok = rk["valid"] & (size > 0)
    out = np.full(b, np.nan)
    hits = _expected_hits(rk, np.where(ok, size, 1))
    out[ok] = hits[ok] / size[ok]
    return out


def mask_auc(rk: dict[str, np.ndarray]) -> np.ndarray:
    """Area under the ROC curve of r as a score for "in the mask" (Fawcett 2006): the chance that
    an in-mask pixel outranks an outside one, ties counting half (Mann-Whitney U, as sklearn's
    trapezoids). NaN for an all-zero map or a mask that is empty or everything."""
    v, inside, before = rk["v"], rk["inside"], rk["before"]
    b, n = v.shape
    pos = before[:, n]
    neg = n - pos
    # U = Σ over in-mask pixels of the outside pixels before them: the j-th in-mask pixel, at
    # position i, has i − j. The key sort puts a tied group's outside pixels first, so each
    # in-mask pixel counted all its tied ones: half of them come off below.
    u = np.where(inside, np.arange(n), 0).sum(axis=1, dtype=np.float64) - pos * (pos - 1) / 2
    tied = np.zeros((b, n + 1), dtype=bool)  # a pixel equal to the one before it
    np.equal(v[:, 1:], v[:, :-1], out=tied[:, 1:n])
    at = np.flatnonzero(tied)  # columns 0 and n stay False, so no run of ties crosses a row
    if at.size:  # each tied group's in-mask × outside pixels
        first = np.ones(at.size, dtype=bool)
        first[1:] = np.diff(at) != 1
        last = np.ones(at.size, dtype=bool)
        last[:-1] = first[1:]
        row, lo = np.divmod(at[first] - 1, n + 1)  # lo: the group's first pixel
        hi = at[last] % (n + 1) + 1  # one past its last
        group = before[row, hi] - before[row, lo]
        u -= 0.5 * np.bincount(row, weights=(group * (hi - lo - group)).astype(np.float64), minlength=b)
    ok = rk["valid"] & (pos > 0) & (neg > 0)
    out = np.full(b, np.nan)
    out[ok] = u[ok] / (pos[ok] * neg[ok].astype(np.float64))
    return out


@dataclass(frozen=True)
class TopKParams:
    k: int = field(default=TOP_K, metadata={"help": "the k most relevant pixels (Quantus's default)"})

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"top_k_intersection k must be a whole number >= 1, got {self.k!r}")


@metric("top_k_intersection", label="Top-k intersection", paper="Theiner et al. 2021", params=TopKParams)
def top_k(maps: ArrayLike, masks: ArrayLike, ctx: MetricContext) -> np.ndarray:
    """Share of the k (default 1000) most relevant pixels inside the mask (Quantus TopKIntersection)."""
    return top_k_intersection(_ranked(maps, masks, ctx), (ctx.params or TopKParams()).k)


@metric("relevance_rank_accuracy", label="Relevance rank accuracy", paper="Arras et al. 2022")
def rank_accuracy(maps: ArrayLike, masks: ArrayLike, ctx: MetricContext) -> np.ndarray:
    """Share of the |mask| most relevant pixels inside the mask (Quantus RelevanceRankAccuracy)."""
    return relevance_rank_accuracy(_ranked(maps, masks, ctx))


@metric("auc", label="Mask ROC AUC", paper="Fawcett 2006")
def auc(maps: ArrayLike, masks: ArrayLike, ctx: MetricContext) -> np.ndarray:
    """ROC AUC of the relevance as a detector of the mask's pixels (Quantus AUC)."""
    return mask_auc(_ranked(maps, masks, ctx))
