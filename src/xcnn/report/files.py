"""Files the report takes from the run folder: small WebP previews of the maps, photos with the
mask outline drawn, and the run's own files (config, exports), so that report/ alone, copied or
zipped anywhere, shows everything, and stays light enough to send (the demo's: 12 MB; its
full-size pictures stay in RUN_DIR/pictures/)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, UnidentifiedImageError

from xcnn.runfolder.layout import CONFIG_FILE, EXP_FILE, RECORDS_CSV

log = logging.getLogger(__name__)

RUN_FILES = (RECORDS_CSV, EXP_FILE, CONFIG_FILE)
_OUTLINE = (255, 255, 51)  # the yellow of the grids' outline
_HALO = (0, 0, 0)
# A gallery card shows its map at most about 170 CSS px wide; at 160 px and this quality a
# preview is a fifth of the run's JPEG (the demo's 750 maps: 15 MB as JPEG, 3 MB so).
PREVIEW_SIDE = 160
PREVIEW_QUALITY = 75
PHOTO_QUALITY = 80


def inside(run_dir: Path, rel: str) -> Path | None:
    """RUN_DIR/rel if rel is a relative path that stays inside RUN_DIR, else None (records are
    data: a path in them must not make the report read or copy files from elsewhere)."""
    if not rel or Path(rel).is_absolute():
        return None
    path = (run_dir / rel).resolve()
    root = run_dir.resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def preview(src: Path, dest: Path, side: int = PREVIEW_SIDE) -> bool:
    """A WebP copy of a picture with its longest side at most `side`; False (and a warning) if
    the picture cannot be read."""
    try:
        with Image.open(src) as opened:
            im = opened.convert("RGB")
        if max(im.size) > side:
            scale = side / max(im.size)
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                           Image.Resampling.LANCZOS)
    except (OSError, UnidentifiedImageError):
        log.warning("picture %s is missing or unreadable; its gallery card shows no picture", src)
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    im.save(dest, "WEBP", quality=PREVIEW_QUALITY)
    return True


def copy_run_files(run_dir: Path, out_dir: Path) -> dict[str, Path]:
    """The run's config and exports beside index.html; those missing are left out."""
    placed = {}
    for name in RUN_FILES:
        src = run_dir / name
        if src.is_file():
            dest = out_dir / name
            shutil.copyfile(src, dest)  # small, and rewritten by the run: never linked
            placed[name] = dest
    return placed


def draw_outline(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of an H×W×3 picture with a bool mask's outline drawn in: yellow over a dark halo,
    visible on grey maps, heat maps and photos alike. The mask is resized (nearest) to fit."""
    out = np.array(rgb, dtype=np.uint8, copy=True)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    inner = Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255)
    if inner.size != (out.shape[1], out.shape[0]):
        inner = inner.resize((out.shape[1], out.shape[0]), Image.Resampling.NEAREST)
    edge = (np.asarray(inner) > 0) & ~(np.asarray(inner.filter(ImageFilter.MinFilter(3))) > 0)
    if edge.all() or not edge.any():
        return out
    edge_img = Image.fromarray(edge.astype(np.uint8) * 255)
    width = 2 * round(min(out.shape[:2]) / 250) + 1  # about 1 % of the picture, odd
    out[np.asarray(edge_img.filter(ImageFilter.MaxFilter(width + 2))) > 0] = _HALO
    out[np.asarray(edge_img.filter(ImageFilter.MaxFilter(width))) > 0] = _OUTLINE
    return out


def outlined_photo(photo: Path, mask: Path | None, dest: Path) -> bool:
    """The photo with the dilated mask's outline as a WebP; False if the photo cannot be read."""
    try:
        with Image.open(photo) as im:
            rgb = np.asarray(im.convert("RGB"))
        if mask is not None:
            with Image.open(mask) as m:
                rgb = draw_outline(rgb, np.asarray(m.convert("L")) > 127)
    except (OSError, UnidentifiedImageError):
        log.warning("photo %s (or its mask) is missing or unreadable; its gallery cards show no photo", photo)
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(dest, "WEBP", quality=PHOTO_QUALITY)
    return True
