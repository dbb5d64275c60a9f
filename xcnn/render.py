"""Maps as pictures: gradient-like maps in grey, Grad-CAM as a heat map over the photo.

Pure NumPy in, H×W×3 uint8 out, so the experiment, the report and the CLI share one look.
"""
from __future__ import annotations

import numpy as np
from matplotlib import colormaps

# A few extreme pixels dominate gradient maps; clipping at a high percentile keeps the rest
# visible (the usual choice in the saliency literature).
CLIP_PERCENTILE = 99.5


def grey(saliency: np.ndarray) -> np.ndarray:
    """C×H×W signed map -> H×W×3 uint8: channel-summed magnitude, white = most salient."""
    magnitude = np.abs(np.asarray(saliency, dtype=np.float32)).sum(axis=0)
    top = float(np.percentile(magnitude, CLIP_PERCENTILE)) if magnitude.size else 0.0
    if top <= 0:
        top = float(magnitude.max()) or 1.0
    level = np.clip(magnitude / top, 0.0, 1.0)
    return np.repeat((level * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def heat_overlay(cam: np.ndarray, photo: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """H×W map in [0, 1] (or 1×H×W) blended as a jet heat map over an H×W×3 uint8 photo."""
    cam = np.asarray(cam, dtype=np.float32).reshape(photo.shape[:2])
    heat = colormaps["jet"](np.clip(cam, 0.0, 1.0))[..., :3]
    blend = (1 - alpha) * photo.astype(np.float32) / 255 + alpha * heat
    return (np.clip(blend, 0, 1) * 255).round().astype(np.uint8)


def picture(method: str, saliency: np.ndarray, photo: np.ndarray) -> np.ndarray:
    """The picture of one method's map: Grad-CAM over the photo, every other map in grey."""
    if method == "gradcam":
        return heat_overlay(saliency, photo)
    return grey(saliency)


def photo_from_tensor(image: np.ndarray) -> np.ndarray:
    """3×H×W float in [0, 1] -> H×W×3 uint8."""
    return (np.clip(np.asarray(image).transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
