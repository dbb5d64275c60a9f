"""Image grids (thesis Fig. 7.8): rows = methods, columns = CNNs, one grid per image and size.

Built only from the PNGs the run wrote (map_png, mask_png, image_png); nothing is recomputed.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402
from tqdm import tqdm  # noqa: E402

from xcnn.errors import XcnnError  # noqa: E402
from xcnn.report.figures import RC, method_color  # noqa: E402
from xcnn.report.tables import cnn_label, method_label, order_methods, order_sizes, size_label  # noqa: E402

log = logging.getLogger(__name__)

ImageChoice = int | tuple[int, str]
DEFAULT_COUNT = 4
_THUMB = 320  # longest side drawn per cell; keeps grids of large originals fast and small


@dataclass
class Grid:
    image_id: int
    category: str
    size: str
    path: Path


def choose_images(df: pd.DataFrame, images: list[ImageChoice] | None) -> list[tuple[int, str]]:
    """(id, category) pairs: the first image of the first few categories, or those asked for (an id alone means all its categories)."""
    pairs = sorted(set(zip(df["id"].astype(int), df["class"])))
    if images is None:
        # One image per category shows more of a run than several of the same object.
        firsts: dict[str, tuple[int, str]] = {}
        for p in pairs:
            firsts.setdefault(p[1], p)
        return sorted(firsts.values())[:DEFAULT_COUNT]
    chosen: list[tuple[int, str]] = []
    for item in images:
        if isinstance(item, tuple):
            found = [p for p in pairs if p == (int(item[0]), str(item[1]))]
            what = f"image {item[0]} with category '{item[1]}'"
        else:
            found = [p for p in pairs if p[0] == int(item)]
            what = f"image id {item}"
        if not found:
            sample = ", ".join(str(i) for i in sorted({p[0] for p in pairs})[:8])
            raise XcnnError(f"{what} is not in the run's records; choose from the ids there (e.g. {sample})")
        chosen.extend(p for p in found if p not in chosen)
    return chosen


def _load(run_dir: Path, rel: str, grey: bool = False) -> np.ndarray | None:
    if not rel:
        return None
    path = run_dir / rel
    try:
        with Image.open(path) as im:
            im = im.convert("L" if grey else "RGB")
            if max(im.size) > _THUMB:
                scale = _THUMB / max(im.size)
                size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
                im = im.resize(size, Image.NEAREST if grey else Image.BILINEAR)
            return np.asarray(im)
    except (OSError, UnidentifiedImageError):
        log.warning("picture %s is missing or unreadable; its grid cell stays empty", path)
        return None


def _outline(ax: plt.Axes, mask: np.ndarray | None, shape: tuple[int, int]) -> None:
    if mask is None or not mask.any() or mask.all():
        return
    if mask.shape != shape:
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(shape[::-1], Image.NEAREST)) > 127
    # A dark halo under a light line stays visible on grey maps and on heat maps alike.
    ax.contour(mask.astype(float), levels=[0.5], colors=["black"], linewidths=3.0)
    ax.contour(mask.astype(float), levels=[0.5], colors=["#FFFF33"], linewidths=1.4)


def _blank(ax: plt.Axes, text: str = "") -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if text:
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="#777777", transform=ax.transAxes)


def _p_text(row: pd.Series) -> str:
    p = row["P"]
    if math.isfinite(p):
        return f"P = {p:.3f}"
    return f"P = NaN ({row['note']})" if row["note"] else "P = NaN"


def _grid(run_dir: Path, rows: pd.DataFrame, image_id: int, category: str, size: str, path: Path) -> None:
    methods = order_methods(set(rows["method"]))
    cnns = sorted(set(rows["CNN"]))
    first = rows.iloc[0]
    photo = _load(run_dir, first["image_png"])
    mask_img = _load(run_dir, first["mask_png"], grey=True)
    mask = mask_img > 127 if mask_img is not None else None
    ncols = len(cnns) + 1
    fig, axes = plt.subplots(len(methods), ncols, figsize=(2.9 * ncols + 0.6, 2.75 * len(methods) + 1.0),
                             squeeze=False)
    for r, method in enumerate(methods):
        for c, cnn in enumerate(cnns, start=1):
            ax = axes[r, c]
            hit = rows[(rows["method"] == method) & (rows["CNN"] == cnn)]
            if hit.empty:
                _blank(ax, "no record")
                continue
            rec = hit.iloc[0]
            picture = _load(run_dir, rec["map_png"])
            if picture is None:
                _blank(ax, "no picture")
            else:
                for spine in ax.spines.values():  # the method's colour frames its maps, as in the figures
                    spine.set_edgecolor(method_color(method))
                    spine.set_linewidth(3)
                ax.imshow(picture, interpolation="nearest")
                cell_mask = _load(run_dir, rec["mask_png"], grey=True) if rec["mask_png"] else None
                _outline(ax, cell_mask > 127 if cell_mask is not None else mask, picture.shape[:2])
                ax.set_xticks([])
                ax.set_yticks([])
            ax.set_xlabel(_p_text(rec), fontsize=13)
            if r == 0:
                target = rec.get("target_name", "")
                title = cnn_label(cnn)
                title += f"\ntarget: {target}" if isinstance(target, str) and target else ""
                ax.set_title(title, fontsize=13)
            if c == 1:
                ax.set_ylabel(method_label(method), fontsize=14, fontweight="bold")
    for r in range(len(methods)):
        _blank(axes[r, 0])
    if photo is not None:
        axes[0, 0].imshow(photo)
        _outline(axes[0, 0], mask, photo.shape[:2])
        axes[0, 0].set_title("Photo", fontsize=13)
        axes[0, 0].set_xlabel("yellow line: dilated mask", fontsize=11)
    if mask is not None and len(methods) > 1:
        axes[1, 0].imshow(mask, cmap="gray", vmin=0, vmax=1)
        for spine in axes[1, 0].spines.values():  # the mask's white must not melt into the page
            spine.set_visible(True)
            spine.set_edgecolor("#888888")
        axes[1, 0].set_xlabel("Dilated mask", fontsize=11)
    fig.suptitle(f"Image {image_id} — {category} — {size_label(size)}", fontsize=17, fontweight="bold")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def write_grids(df: pd.DataFrame, run_dir: Path, out_dir: Path, images: list[ImageChoice] | None) -> list[Grid]:
    """One PNG grid per chosen (image, category) and size."""
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = choose_images(df, images)
    grids: list[Grid] = []
    jobs = [(i, c, s) for i, c in chosen
            for s in order_sizes(set(df.loc[(df["id"] == i) & (df["class"] == c), "size"]))]
    with plt.rc_context(RC):
        for image_id, category, size in tqdm(jobs, desc="image grids", unit="grid", disable=len(jobs) < 4):
            rows = df[(df["id"] == image_id) & (df["class"] == category) & (df["size"] == size)]
            slug = "".join(ch if ch.isalnum() else "_" for ch in f"{image_id}_{category}_{size}")
            path = out_dir / f"grid_{slug}.png"
            _grid(run_dir, rows, image_id, category, size, path)
            grids.append(Grid(image_id, category, size, path))
    return grids
