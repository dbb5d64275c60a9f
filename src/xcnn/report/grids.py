"""Image grids (as Fig. 7.8 of the thesis): rows = methods, columns = CNNs, one grid per chosen
(image, category) and size; the first column holds the photo, its mask and the model-free
baselines. Written as WebP: a grid is mostly photos, and as PNG the demo's eight took 19 MB.

Built only from the pictures the run wrote (image_png and map_png are JPEGs, mask_png a PNG,
whatever the field names say); nothing is recomputed.
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
from xcnn.files import slug, unit_stem  # noqa: E402
from xcnn.report.files import draw_outline, inside  # noqa: E402
from xcnn.report.figures import RC, method_color  # noqa: E402
from xcnn.report.tables import (  # noqa: E402
    TOP_K, cnn_label, is_baseline, method_label, order_ids, order_methods, order_sizes, size_label,
)

log = logging.getLogger(__name__)

ImageChoice = int | str | tuple[int | str, str]
DEFAULT_COUNT = 4
GRID_QUALITY = 80  # WebP: a seventh of the PNG's size, the labels still crisp
# Longest side of a cell: the run keeps its pictures at this size (render.PICTURE_SIDE, equal by
# test; render is not imported, as it asks the registry, which imports torch).
CELL_SIDE = 320


@dataclass
class Grid:
    image_id: int | str
    category: str
    size: str
    path: Path


MAX_CHANCE = 0.5  # a default grid's object (dilated) covers at most half the photo: else every map "hits" it


# The default choice's tiers, strictest first, with the words that tell the reader which one chose.
_TIERS = (
    f"whose target every CNN ranks in its top {TOP_K} and whose dilated object covers at most half of the photo",
    f"whose target every CNN ranks in its top {TOP_K} (no such photo has an object covering at most half of it)",
    f"whose dilated object covers at most half of the photo (no photo's target is in every CNN's top {TOP_K})",
    f"of any kind (none has its target in every CNN's top {TOP_K} and an object covering at most half of it)",
)


def _default_pairs(df: pd.DataFrame) -> tuple[list[tuple[int | str, str]], str]:
    """Informative pairs first: the target in every CNN's top 5 and an object that leaves room
    around it; one per category, then more of the same kind up to DEFAULT_COUNT. Also the words
    of the tier that chose them."""
    methods = df[~df["method"].map(is_baseline)]
    if methods.empty:
        methods = df
    stats = methods.groupby(["id", "class"]).agg(rank=("target_rank", "max"), chance=("chance", "mean"))
    rank_ok = ~(stats["rank"] > TOP_K)  # an unknown rank does not rule a photo out
    chance_ok = ~(stats["chance"] > MAX_CHANCE)
    anything = pd.Series(True, index=stats.index)
    pairs: list[tuple[int | str, str]] = []
    words = _TIERS[-1]
    for tier, said in zip((rank_ok & chance_ok, rank_ok, chance_ok, anything), _TIERS):
        pairs, words = _by_id(list(stats.index[tier.to_numpy()])), said
        if pairs:
            break
    firsts: dict[str, tuple[int | str, str]] = {}
    for p in pairs:
        firsts.setdefault(p[1], p)
    chosen = _by_id(list(firsts.values()))[:DEFAULT_COUNT]
    chosen += [p for p in pairs if p not in chosen][:DEFAULT_COUNT - len(chosen)]
    return chosen, words


def choice_note(df: pd.DataFrame, images: list[ImageChoice] | None) -> str:
    """Why the grids show the photos they show, in a sentence for the page."""
    if images is not None:
        return ("These are the photos asked for with --images (an id alone: each of its categories), at every "
                "input size.")
    _, words = _default_pairs(df)
    return (f"Which photos: with no --images, up to {DEFAULT_COUNT} (photo, category) pairs {words} — a larger "
            "object is hit by almost any map, and a target the model does not see tells little — taking the "
            "lowest photo id of each category first, then more of the same kind; each at every input size. "
            "Show others with 'xcnn report RUN_DIR --images ID,ID:category'.")


def target_text(target: str, rank: float) -> str:
    """The line above a CNN's column: its target and the model's rank of it ("rank 1": its top class)."""
    return f"target: {target[:22]}" + (f" (rank {int(rank)})" if math.isfinite(rank) else "")


def _by_id(pairs: list[tuple[int | str, str]]) -> list[tuple[int | str, str]]:
    rank = {v: i for i, v in enumerate(order_ids(pd.Series([p[0] for p in pairs])))}
    return sorted(pairs, key=lambda p: (rank[p[0]], p[1]))


def choose_images(df: pd.DataFrame, images: list[ImageChoice] | None) -> list[tuple[int | str, str]]:
    """(id, category) pairs: informative defaults (see _default_pairs), or those asked for (an id
    alone means all its categories). Ids are compared as text, so 139 finds photo 139 whatever
    the records' id type."""
    if images is None:
        return _default_pairs(df)[0]
    pairs = _by_id(list(set(zip(df["id"], df["class"]))))
    chosen: list[tuple[int | str, str]] = []
    for item in images:
        if isinstance(item, tuple):
            found = [p for p in pairs if (str(p[0]), p[1]) == (str(item[0]), str(item[1]))]
            what = f"image {item[0]} with category '{item[1]}'"
        else:
            found = [p for p in pairs if str(p[0]) == str(item)]
            what = f"image id {item}"
        if not found:
            sample = ", ".join(str(i) for i in order_ids(df["id"])[:8])
            raise XcnnError(f"--images: {what} is not in the run's records; choose from its ids (e.g. {sample})")
        chosen.extend(p for p in found if p not in chosen)
    return chosen


def _load(run_dir: Path, rel: str, grey: bool = False) -> np.ndarray | None:
    path = inside(run_dir, rel)
    if path is None:
        if rel:
            log.warning("picture %s is missing or outside the run folder; its grid cell stays empty", rel)
        return None
    try:
        with Image.open(path) as opened:
            im = opened.convert("L" if grey else "RGB")
        # no cell is drawn larger than a run keeps its pictures: larger ones would only slow the grid and grow it
        if max(im.size) > CELL_SIDE:
            scale = CELL_SIDE / max(im.size)
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            im = im.resize(size, Image.Resampling.NEAREST if grey else Image.Resampling.BILINEAR)
        return np.asarray(im)
    except (OSError, UnidentifiedImageError):
        log.warning("picture %s is missing or unreadable; its grid cell stays empty", path)
        return None


def _outline(picture: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    # Painted into the pixels: a contour per cell costs seconds on a grid of many methods.
    return picture if mask is None or not mask.any() or mask.all() else draw_outline(picture, mask)


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


def _map_cell(ax: plt.Axes, run_dir: Path, rec: pd.Series, mask: np.ndarray | None) -> None:
    picture = _load(run_dir, rec["map_png"])
    if picture is None:
        _blank(ax, "no picture")
    else:
        for spine in ax.spines.values():  # the method's colour frames its maps, as in the figures
            spine.set_edgecolor(method_color(rec["method"]))
            spine.set_linewidth(3)
        cell_mask = _load(run_dir, rec["mask_png"], grey=True) if rec["mask_png"] else None
        ax.imshow(_outline(picture, cell_mask > 127 if cell_mask is not None else mask), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel(_p_text(rec), fontsize=12)


def _grid(run_dir: Path, rows: pd.DataFrame, image_id: int | str, category: str, size: str, path: Path) -> None:
    base = rows["method"].map(is_baseline).to_numpy(dtype=bool)
    methods = order_methods(set(rows.loc[~base, "method"]))
    baselines = order_methods(set(rows.loc[base, "method"]))
    cnns = sorted(set(rows.loc[~base, "CNN"]))
    first = rows.iloc[0]
    photo = _load(run_dir, first["image_png"])
    mask_img = _load(run_dir, first["mask_png"], grey=True)
    mask = mask_img > 127 if mask_img is not None else None
    # Column 0: photo, mask, then one baseline per row (they have no CNN).
    nrows = max(len(methods), 2 + len(baselines), 1)
    ncols = len(cnns) + 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols + 0.8, 2.55 * nrows + 1.0), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        _blank(ax)
    for r, method in enumerate(methods):
        for c, cnn in enumerate(cnns, start=1):
            ax = axes[r, c]
            hit = rows[(rows["method"] == method) & (rows["CNN"] == cnn)]
            if hit.empty:
                _blank(ax, "no record")
                continue
            rec = hit.iloc[0]
            _map_cell(ax, run_dir, rec, mask)
            if r == 0:
                target = rec.get("target_name", "")
                rank = rec.get("target_rank", math.nan)
                ax.set_title(cnn_label(cnn), fontsize=12, fontweight="bold", pad=16)
                if isinstance(target, str) and target:  # small and short: neighbouring columns must not touch
                    ax.text(0.5, 1.02, target_text(target, rank), transform=ax.transAxes, ha="center", va="bottom",
                            fontsize=9, color="#444444")
            if c == 1:
                ax.set_ylabel(method_label(method), fontsize=13, fontweight="bold")
    if photo is not None:
        axes[0, 0].imshow(_outline(photo, mask))
        axes[0, 0].set_title("Photo", fontsize=12)
        axes[0, 0].set_xlabel("yellow line: dilated mask", fontsize=10)
    if mask is not None and nrows > 1:
        axes[1, 0].imshow(mask, cmap="gray", vmin=0, vmax=1)
        for spine in axes[1, 0].spines.values():  # the mask's white must not melt into the page
            spine.set_visible(True)
            spine.set_edgecolor("#888888")
        axes[1, 0].set_title("Dilated mask", fontsize=12)
    for r, method in enumerate(baselines, start=2):
        rec = rows[rows["method"] == method].iloc[0]
        _map_cell(axes[r, 0], run_dir, rec, mask)
        axes[r, 0].set_title(method_label(method), fontsize=12, color="#555555", fontstyle="italic")
    fig.suptitle(f"Image {image_id} — {category} — {size_label(size)}", fontsize=16, fontweight="bold")
    fig.savefig(path, format="webp", dpi=100, pil_kwargs={"quality": GRID_QUALITY})
    plt.close(fig)


def write_grids(df: pd.DataFrame, run_dir: Path, out_dir: Path, chosen: list[tuple[int | str, str]]) -> list[Grid]:
    """One WebP grid per chosen (image, category) (see choose_images) and size."""
    out_dir.mkdir(parents=True, exist_ok=True)
    grids: list[Grid] = []
    jobs = [(i, c, s) for i, c in chosen
            for s in order_sizes(set(df.loc[(df["id"] == i) & (df["class"] == c), "size"]))]
    with plt.rc_context(RC):
        for image_id, category, size in tqdm(jobs, desc="image grids", unit="grid", disable=len(jobs) < 4):
            rows = df[(df["id"] == image_id) & (df["class"] == category) & (df["size"] == size)]
            path = out_dir / f"grid_{unit_stem(str(image_id), str(category))}_{slug(str(size))}.webp"
            _grid(run_dir, rows, image_id, category, size, path)
            grids.append(Grid(image_id, category, size, path))
    return grids
