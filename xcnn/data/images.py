"""Reading photos as RGB uint8 arrays."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from xcnn.errors import XcnnError


def load_image(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image as H×W×3 uint8 RGB (greyscale, palette, CMYK and RGBA are converted).

    `size` = (h, w) expected from the annotation file; a file of another size is an error,
    because its mask would not line up with it.

    EXIF orientation is deliberately NOT applied: COCO polygons and RLEs are given in the
    stored pixel grid (the annotation's width/height are the stored ones), so rotating
    the photo would move it away from its mask.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()  # decode fully now, so a truncated file fails here, not later
            rgb = img.convert("RGB")
    except FileNotFoundError:
        raise XcnnError(f"image file {path} not found; download it again or fix the image folder") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise XcnnError(f"cannot read image {path} ({err}); the file is damaged or not an image, download it again") from None
    array = np.asarray(rgb, dtype=np.uint8)
    if size is not None and array.shape[:2] != tuple(size):
        h, w = array.shape[:2]
        raise XcnnError(
            f"image {path} is {w}×{h} pixels but its annotation says {size[1]}×{size[0]}; "
            "the mask would not line up, use the file the annotation was made for"
        )
    return array
