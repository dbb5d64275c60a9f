"""Localisation metrics of saliency maps against object masks (SPEC §2, §4).

Every function is pure and batched: ``maps`` is B×C×H×W (C = 3 for gradient maps, 1 for
Grad-CAM), ``masks`` is B×H×W (bool or 0/1), both NumPy arrays or torch tensors. Sums are
taken in float64 so that P does not depend on the map's dtype. Results are float64 / bool
NumPy arrays of length B.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from xcnn.errors import XcnnError

ArrayLike = Any  # np.ndarray or torch.Tensor


def _as_numpy(x: ArrayLike) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, wherever it lives
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check(maps: ArrayLike, masks: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    m = _as_numpy(maps).astype(np.float64, copy=False)
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
    per_pixel = np.square(m).sum(axis=1)  # B×H×W, energy summed over channels
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
    per_pixel = np.square(m).sum(axis=1).reshape(m.shape[0], -1)
    best = per_pixel.argmax(axis=1)
    return k.reshape(k.shape[0], -1)[np.arange(k.shape[0]), best]


def relevance_mass_accuracy(maps: ArrayLike, masks: ArrayLike) -> np.ndarray:
    """RMA = Σ|I|·M / Σ|I| (unsquared, summed over channels); NaN for an all-zero map."""
    m, k = _check(maps, masks)
    per_pixel = np.abs(m).sum(axis=1)
    total = per_pixel.sum(axis=(1, 2))
    inside = np.where(k, per_pixel, 0.0).sum(axis=(1, 2))
    return _ratio(inside, total)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out
