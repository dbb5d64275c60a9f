"""Maps as pictures: signed maps in grey, heat maps (the CAMs) as a heat map over the photo.

Pure NumPy in, H×W×3 uint8 out, so the experiment, the report and the CLI share one look. Which
look a method gets is its registry entry's ``draw``; no method is named here. Also the size
pictures are kept and drawn at (PICTURE_SIDE), for the run's pictures and the report's grids.
Torch-free: the report imports it.
"""
from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image

from xcnn.methods import registry

# A few extreme pixels dominate gradient maps; clipping at a high percentile keeps the rest
# visible (the usual choice in the saliency literature).
CLIP_PERCENTILE = 99.5
# Longest side of the pictures a run keeps and of a report grid's cell: enough to see a map,
# small enough that thousands of pictures and grids of large originals stay small and fast.
PICTURE_SIDE = 320


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
    """The picture of one method's (or baseline's) C×H×W map, as its registry entry draws it:
    "heat" over the photo, "grey" alone. XcnnError for an unknown name."""
    if registry.get(method).draw == "heat":
        return heat_overlay(saliency, photo)
    return grey(saliency)


def shrink(img: Image.Image, resample: Image.Resampling = Image.Resampling.LANCZOS) -> Image.Image:
    """``img`` with its longest side at most PICTURE_SIDE (itself when it already fits)."""
    if max(img.size) <= PICTURE_SIDE:
        return img
    scale = PICTURE_SIDE / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample)


def shrink_map(method: str, m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A C×H×W map brought to picture size ``hw`` *before* rendering (rendering full-size maps
    only to shrink the pictures cost more than the metrics). Grey pictures show the channel-summed
    magnitude, so that is what gets area-averaged; heat maps are resized bilinearly."""
    if m.shape[1:] == hw:
        return m
    heat = registry.get(method).draw == "heat"
    plane = m[0] if heat else np.abs(m).sum(axis=0)
    resample = Image.Resampling.BILINEAR if heat else Image.Resampling.BOX
    small = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32)).resize((hw[1], hw[0]), resample)
    return np.asarray(small)[None]
