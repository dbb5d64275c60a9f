"""Model-free maps, scored exactly like methods, so a method's score has a floor to beat.

Each baseline is ``f(photos) -> maps``: ``photos`` is B×H×W×3 uint8 RGB (the photo at the
model's input size, before normalisation), the result B×1×H×W float32 in [0, 1] (the
registry's "heat" kind). They are registered (``baseline=True``) as ``uniform``, ``centre`` and
``edges``.

- ``uniform``: all ones; its energy concentration equals the mask's area fraction (chance).
- ``centre``: an isotropic Gaussian centred at ((H−1)/2, (W−1)/2) with σ = ¼ of the shorter
  side, peak 1 — the photographer's centre bias, which object masks share.
- ``edges``: Sobel gradient magnitude of the grey photo (ITU-R BT.601 luma), scaled by its
  maximum; a flat photo gives all zeros (P is then NaN, as for any all-zero map).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from xcnn.errors import XcnnError
from xcnn.metrics.localisation import ArrayLike, _as_numpy
from xcnn.registry import method

LUMA_601 = (0.299, 0.587, 0.114)


def _photos(photos: ArrayLike) -> np.ndarray:
    p = _as_numpy(photos)
    if p.ndim != 4 or p.shape[-1] != 3:
        raise XcnnError(f"photos must be B×H×W×3 (RGB, uint8), got shape {tuple(p.shape)}")
    return p


@method("uniform", label="Uniform (baseline)", kind="heat", baseline=True)
def uniform(photos: ArrayLike) -> np.ndarray:
    """All ones, B×1×H×W float32: P equals the mask's area fraction exactly."""
    b, h, w, _ = _photos(photos).shape
    return np.ones((b, 1, h, w), dtype=np.float32)


@method("centre", label="Centre (baseline)", kind="heat", baseline=True)
def centre(photos: ArrayLike) -> np.ndarray:
    """exp(−d² / 2σ²), d the distance to ((H−1)/2, (W−1)/2), σ = min(H, W) / 4; B×1×H×W float32."""
    b, h, w, _ = _photos(photos).shape
    sigma = min(h, w) / 4.0
    y = (np.arange(h, dtype=np.float64) - (h - 1) / 2.0) ** 2
    x = (np.arange(w, dtype=np.float64) - (w - 1) / 2.0) ** 2
    g = np.exp(-(y[:, None] + x[None, :]) / (2.0 * sigma * sigma)).astype(np.float32)
    return np.broadcast_to(g, (b, 1, h, w)).copy()


@method("edges", label="Edges (baseline)", kind="heat", baseline=True)
def edges(photos: ArrayLike) -> np.ndarray:
    """Sobel gradient magnitude of the luma (float64, ``scipy.ndimage.sobel``, mode "reflect"),
    divided by its per-photo maximum; B×1×H×W float32. Scaling changes no score (P, pointing,
    RMA, rankings) and keeps the map in [0, 1] for pictures."""
    p = _photos(photos)
    grey = p.astype(np.float64) @ np.asarray(LUMA_601)  # B×H×W
    gy = ndimage.sobel(grey, axis=1, mode="reflect")
    gx = ndimage.sobel(grey, axis=2, mode="reflect")
    mag = np.hypot(gx, gy)
    peak = mag.max(axis=(1, 2), keepdims=True)
    out = np.zeros_like(mag)
    np.divide(mag, peak, out=out, where=peak > 0)  # a flat photo stays all zero
    scaled: np.ndarray = out[:, None].astype(np.float32)
    return scaled
