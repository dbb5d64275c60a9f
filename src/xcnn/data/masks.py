"""Object masks: exact dilation by area growth, and nearest-neighbour resizing."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage

from xcnn.errors import XcnnError


def dilate(mask: np.ndarray, growth: float = 0.20) -> np.ndarray:
    """Grow `mask` until its area is (1 + growth) times the original.

    Definition: with d(p) the Euclidean distance from pixel centre p to the
    nearest mask pixel centre (0 inside the mask), the dilated mask is {p : d(p) <= r},
    where r is the smallest radius for which that set holds at least
    ceil((1 + growth) * area) pixels. Pixels at equal distance are all taken, so the
    result may overshoot the target by less than one ring of pixels; any smaller radius
    falls short of it. Only pixels inside the image count (the border clips the growth);
    when even the whole image is too small, the result is all ones. growth == 0 returns
    a copy of the mask unchanged.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise XcnnError(f"mask must be 2-D (H×W), got shape {mask.shape}")
    if not math.isfinite(growth) or growth < 0:
        raise XcnnError(f"dilation growth must be a number >= 0, got {growth!r}")
    area = int(mask.sum())
    if area == 0:
        raise XcnnError(f"zero-area mask of shape {mask.shape}: nothing to dilate; skip this image/category")
    if growth == 0:
        return mask.copy()
    # round() first: (1 + 0.2) * 100 is 120.00000000000001 in floating point, not 121 pixels.
    target = math.ceil(round((1.0 + growth) * area, 6))
    if target >= mask.size:
        return np.ones_like(mask)
    # One distance transform, then the radius is read off the sorted distances: the
    # target-th smallest distance is exactly the smallest radius that reaches the target.
    dist = ndimage.distance_transform_edt(~mask)
    radius = np.partition(dist.ravel(), target - 1)[target - 1]
    return dist <= radius


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a bool mask to size = (h, w) with nearest neighbour.

    PIL does the resampling so the mask picks exactly the same source pixels as
    PIL's NEAREST resize of the photo: mask and picture stay aligned.
    """
    mask = np.asarray(mask, dtype=bool)
    h, w = (int(s) for s in size)
    if mask.ndim != 2:
        raise XcnnError(f"mask must be 2-D (H×W), got shape {mask.shape}")
    if h < 1 or w < 1:
        raise XcnnError(f"resize size must be positive (h, w), got {size!r}")
    if mask.shape == (h, w):
        return mask.copy()
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(img.resize((w, h), Image.Resampling.NEAREST)) > 127
