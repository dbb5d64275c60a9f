"""Reading photos as RGB uint8 arrays, within a pixel budget.

Wide images are scaled by the range of their pixel type, never clipped: 16-bit ('I;16*'
modes) by 1/257; 32-bit integers ('I') as they are when every value fits 8 bits (0..255),
else by 1/257 when they fit 16 bits (0..65535: 16-bit data often comes back as 'I');
floats ('F') in [0, 1] by 255. Any other range has no meaning we could guess (negative
values, HDR, raw sensor counts) and is refused. An 'I' image whose 16-bit values all happen
to be <= 255 (a nearly black 16-bit photo) is read as 8-bit: the file does not tell the two apart.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from xcnn.errors import XcnnError

log = logging.getLogger(__name__)

# The engine at original size keeps every activation of one image for its backward passes.
# Measured (peak RSS, CPU, float32, one image, the five maps, 384² against 768² inputs), the
# memory grows by about 2.3 kB per input pixel for ResNet-50, 2.1 kB for VGG-16 and 3.1 kB
# for DenseNet-121: 24 GB holds about 7.5 megapixels of the heaviest. 6 megapixels (a
# 3000×2000 photo; every COCO image is under 0.4) leaves room for the model, the CUDA
# context and fragmentation. The budget also bounds decoding (3 bytes a pixel) long before
# PIL's own decompression-bomb limit (179 megapixels).
DEFAULT_MAX_PIXELS = 6_000_000

# Pixel modes wider than 8 bits, scaled by their range (module docstring) instead of being clipped.
_WIDE = ("I", "F")

# What a damaged, hostile or non-image file makes PIL raise while opening or decoding it.
_UNREADABLE = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)

_pil_limit = threading.Lock()


class ImageTooLarge(XcnnError):
    """An image with more pixels than the budget: for a selection a reason to skip it, not to stop."""

    def __init__(self, path: Path, width: int, height: int, budget: int) -> None:
        self.path, self.width, self.height, self.budget = path, width, height, budget
        super().__init__(
            f"image {path} is {width}×{height} = {width * height:,} pixels, over the budget of {budget:,} "
            "pixels; raise the budget (run.max_pixels in the config or --max-pixels) if memory allows"
        )


def load_image(path: str | Path, size: tuple[int, int] | None = None, *, max_pixels: int | None = None,
               upright: bool = False) -> np.ndarray:
    """Read an image as H×W×3 uint8 RGB (greyscale, palette, CMYK, RGBA and wide modes are converted).

    `size` = (h, w) expected from the annotation file; a file of another size is an error,
    because its mask would not line up with it. `max_pixels` (default DEFAULT_MAX_PIXELS)
    is checked on the header, before anything is decoded: an image over it raises
    ImageTooLarge.

    EXIF orientation is NOT applied by default: COCO polygons and RLEs are given in the
    stored pixel grid (the annotation's width/height are the stored ones), so rotating
    the photo would move it away from its mask. `upright=True` applies it, for a photo
    without a mask (`xcnn explain`): the camera's sideways pixels turned as a viewer shows them.
    """
    path = Path(path)
    budget = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise XcnnError(f"max_pixels must be a whole number of pixels >= 1, got {max_pixels!r}")
    try:
        with _header(path) as img:
            w, h = img.size
            if w * h > budget:
                raise ImageTooLarge(path, w, h, budget)
            if size is not None and (h, w) != tuple(size):
                raise XcnnError(
                    f"image {path} is {w}×{h} pixels but its annotation says {size[1]}×{size[0]}; "
                    "the mask would not line up, use the file the annotation was made for"
                )
            img.load()  # decode fully now, so a truncated file fails here, not later
            if upright:
                img = ImageOps.exif_transpose(img)
            if img.mode.startswith(_WIDE):
                grey = _scale(np.asarray(img), img.mode, path)
                return np.repeat(grey[:, :, None], 3, axis=2)
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise XcnnError(f"image file {path} not found; download it again or fix the image folder") from None
    except _UNREADABLE as err:
        raise XcnnError(f"cannot read image {path} ({err}); the file is damaged or not an image, download it again") from None


def exif_orientation(path: str | Path) -> int:
    """The photo's EXIF orientation tag: 1 (stored upright, also when there is no tag or no
    readable file) to 8; `load_image(..., upright=True)` turns the photo by it."""
    try:
        with _header(Path(path)) as img:
            value = img.getexif().get(0x0112, 1)
    except _UNREADABLE:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file's header, without decoding it; XcnnError if unreadable."""
    path = Path(path)
    try:
        with _header(path) as img:
            return img.size[1], img.size[0]
    except FileNotFoundError:
        raise XcnnError(f"file {path} not found; add it or fix the name that points to it") from None
    except _UNREADABLE as err:
        raise XcnnError(f"cannot read image {path} ({err}); the file is damaged or not an image") from None


def load_labels(path: str | Path, max_pixels: int | None = None) -> tuple[np.ndarray, str]:
    """A mask or label image as stored, with its PIL mode: palette indices stay indices (never
    converted to colours) and EXIF orientation is not applied, as for photos. XcnnError if the
    file is missing, unreadable or over `max_pixels` (default DEFAULT_MAX_PIXELS)."""
    path = Path(path)
    budget = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    try:
        with _header(path) as img:
            if img.size[0] * img.size[1] > budget:
                raise ImageTooLarge(path, img.size[0], img.size[1], budget)
            img.load()
            return np.asarray(img), img.mode
    except FileNotFoundError:
        raise XcnnError(f"mask file {path} not found; add it or fix the name that points to it") from None
    except _UNREADABLE as err:
        raise XcnnError(f"cannot read mask {path} ({err}); the file is damaged or not an image") from None


def is_image(path: str | Path) -> bool:
    """Whether PIL recognises the file's header as an image (its data may still be damaged)."""
    try:
        with _header(Path(path)):
            return True
    except _UNREADABLE:
        return False


@contextmanager
def _header(path: Path) -> Iterator[Image.Image]:
    """The image opened lazily: only its header is read, so its size is known before decoding.

    PIL's decompression-bomb check would raise (or warn) inside Image.open, before the size
    can be seen, and its limit is a module global; our budget, checked right after, takes
    its place. The lock keeps our own threads from restoring the limit under each other.
    """
    with _pil_limit:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            img = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    with img:
        yield img


def _scale(values: np.ndarray, mode: str, path: Path) -> np.ndarray:
    """Wide pixel values -> uint8 by the range of their type (see the module docstring)."""
    lo, hi = values.min(), values.max()
    if mode == "F":
        if lo >= 0 and hi <= 1:  # False for NaN too
            return np.rint(values * 255.0).astype(np.uint8)
        expected = "[0, 1]"
    else:
        if lo >= 0 and hi <= 255 and mode == "I":
            return values.astype(np.uint8)
        if lo >= 0 and hi <= 65535:
            log.debug("%s: %s image scaled from 16 to 8 bits", path, mode)
            return np.rint(values / 257.0).astype(np.uint8)
        expected = "[0, 65535]"
    raise XcnnError(
        f"image {path} has mode {mode!r} with values in [{lo}, {hi}], outside the range xcnn can scale "
        f"to 8 bits ({expected}); convert it to 8-bit RGB (e.g. PNG or JPEG)"
    )
