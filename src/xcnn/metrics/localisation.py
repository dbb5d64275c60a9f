"""Localisation metrics of saliency maps against object masks (energy concentration and friends).

Every function is pure and batched: ``maps`` is B×C×H×W (C = 3 for gradient maps, 1 for
Grad-CAM), ``masks`` is B×H×W (bool or 0/1), both NumPy arrays or torch tensors. Squares are
taken in the map's dtype (float32 or float64), every sum in float64. Results are float64 / bool
NumPy arrays of length B.
"""
from __future__ import annotations

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


def energy(maps: ArrayLike, masks: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(E, E_celk): squared map summed inside the mask, and over the whole map."""
    m, k = _check(maps, masks)
    per_pixel = np.square(m).sum(axis=1, dtype=np.float64)  # B×H×W, energy summed over channels
    total = per_pixel.sum(axis=(1, 2))
    inside = np.where(k, per_pixel, 0.0).sum(axis=(1, 2))
    return inside, total


def concentration(maps: ArrayLike, masks: ArrayLike) -> np.ndarray:
    """P = E / E_celk; NaN where the map is all zero (no energy to concentrate)."""
    e, total = energy(maps, masks)
    return _ratio(e, total)


def chance_level(masks: ArrayLike) -> np.ndarray:
    """Mask area fraction: the P that a uniform map scores."""
    k = _as_numpy(masks).astype(bool, copy=False)
    if k.ndim != 3:
        raise XcnnError(f"masks must be B×H×W, got {tuple(k.shape)}")
    return k.reshape(k.shape[0], -1).mean(axis=1, dtype=np.float64)


def pointing_game(maps: ArrayLike, masks: ArrayLike) -> np.ndarray:
    """Whether the pixel of maximum energy (squared map summed over channels) is in the mask.

    Ties go to the first maximal pixel in row-major order, so the answer is deterministic; an
    all-zero map has no maximum worth pointing with, and the caller should treat it as
    undefined (see ``concentration``'s NaN).
    """
    m, k = _check(maps, masks)
    per_pixel = np.square(m).sum(axis=1, dtype=np.float64).reshape(m.shape[0], -1)
    best = per_pixel.argmax(axis=1)
    return k.reshape(k.shape[0], -1)[np.arange(k.shape[0]), best]


def relevance_mass_accuracy(maps: ArrayLike, masks: ArrayLike) -> np.ndarray:
    """RMA = Σ|I|·M / Σ|I| (unsquared, summed over channels); NaN for an all-zero map."""
    m, k = _check(maps, masks)
    per_pixel = np.abs(m).sum(axis=1, dtype=np.float64)
    total = per_pixel.sum(axis=(1, 2))
    inside = np.where(k, per_pixel, 0.0).sum(axis=(1, 2))
    return _ratio(inside, total)


def scores(maps: ArrayLike, masks: ArrayLike) -> dict[str, np.ndarray]:
    """Every metric above in one pass over the maps (what the registered metrics below read):
    ``E, E_celk, P, chance, pointing_hit, rma``, each of length B. ``pointing_hit`` is
    float here: 1.0 / 0.0, and NaN for an all-zero map."""
    m, k = _check(maps, masks)
    # Hot path of a run: one pass per quantity. Per-pixel channel sums stay in the map's dtype
    # (three terms), every sum over pixels is float64; multiplying by a 0/1 mask is exact.
    energy_px = np.einsum("bchw,bchw->bhw", m, m)
    abs_px = np.abs(m).sum(axis=1)
    inside_k = k.astype(m.dtype)
    flat_k = k.reshape(k.shape[0], -1)
    total = energy_px.sum(axis=(1, 2), dtype=np.float64)
    inside = (energy_px * inside_k).sum(axis=(1, 2), dtype=np.float64)
    best = energy_px.reshape(m.shape[0], -1).argmax(axis=1)
    hit = flat_k[np.arange(k.shape[0]), best].astype(np.float64)
    hit[~(total > 0)] = np.nan
    abs_total = abs_px.sum(axis=(1, 2), dtype=np.float64)
    abs_inside = (abs_px * inside_k).sum(axis=(1, 2), dtype=np.float64)
    return {
        "E": inside,
        "E_celk": total,
        "P": _ratio(inside, total),
        "chance": flat_k.mean(axis=1, dtype=np.float64),
        "pointing_hit": hit,
        "rma": _ratio(abs_inside, abs_total),
    }


# --- the registered per-map metrics: every record gets each (xcnn.registry.metric) --------------

def _shared(maps: ArrayLike, masks: ArrayLike, ctx: MetricContext) -> dict[str, np.ndarray]:
    """``scores`` once per call, whichever of these metrics asks first (they share one pass)."""
    if "localisation" not in ctx.cache:
        ctx.cache["localisation"] = scores(maps, masks)
    return ctx.cache["localisation"]


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
