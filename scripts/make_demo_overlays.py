"""Draw every demo photo with its masks into one sheet: docs/demo_overlays.png.

Usage: python scripts/make_demo_overlays.py [OUT_PNG]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from xcnn.data import demo

COLORS = plt.get_cmap("tab10").colors


def overlay(photo: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    out = photo.astype(float)
    for i, m in enumerate(masks):
        c = np.array(COLORS[i % len(COLORS)]) * 255
        out[m] = 0.45 * out[m] + 0.55 * c
        edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
        out[edge] = c
    return out.astype(np.uint8)


def main(out_png: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ann_file, image_dir = demo.build(Path(tmp))
        coco = COCO(str(ann_file))
        ids = sorted(coco.getImgIds())
        cols = 4
        rows = -(-len(ids) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows))
        for ax in axes.ravel():
            ax.axis("off")
        for ax, img_id in zip(axes.ravel(), ids):
            info = coco.loadImgs(img_id)[0]
            photo = np.asarray(Image.open(image_dir / info["file_name"]).convert("RGB"))
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
            masks = [coco.annToMask(a).astype(bool) for a in anns]
            ax.imshow(overlay(photo, masks))
            names = sorted({coco.cats[a["category_id"]]["name"] for a in anns})
            ax.set_title(f"{img_id}: {info['file_name']}\n{', '.join(names)} ({len(anns)} masks)", fontsize=9)
        fig.tight_layout()
        out_png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_png, dpi=64)
        plt.close(fig)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs" / "demo_overlays.png")
