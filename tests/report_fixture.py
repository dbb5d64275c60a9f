"""Hand-made RUN_DIRs for the report tests: known P values and tiny PNGs, no model involved."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

METHODS = ("gradient", "deconvnet", "guided_backprop", "gradcam", "guided_gradcam")
W, H = 40, 30
# Mask: a 16×12 rectangle -> chance = 192 / 1200 = 0.16 at every size.
MASK_BOX = (8, 6, 24, 18)  # x0, y0, x1, y1
CHANCE = (MASK_BOX[2] - MASK_BOX[0]) * (MASK_BOX[3] - MASK_BOX[1]) / (W * H)


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_run_dir(
    run_dir: Path,
    p_of: Callable[[int, str, str, str, str], float] | None = None,
    images: tuple[tuple[int, str], ...] = ((1, "dog"), (2, "traffic light")),
    cnns: tuple[str, ...] = ("mobilenet_v2", "resnet18"),
    sizes: tuple[str, ...] = ("original", "224"),
    methods: tuple[str, ...] = METHODS,
    pictures: bool = True,
    csv: bool = False,
    jsonl: bool = True,
) -> list[dict]:
    """Write records (and PNGs) for every (image, category, CNN, size, method); return the records.

    `p_of(id, category, cnn, size, method)` gives P (NaN allowed); default: a spread of values.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    records = []
    for k, (image_id, category) in enumerate(images):
        for size in sizes:
            photo = np.zeros((H, W, 3), np.uint8)
            photo[..., 0] = np.linspace(0, 255, W, dtype=np.uint8)[None, :]
            photo[..., 1] = np.linspace(0, 255, H, dtype=np.uint8)[:, None]
            photo[..., 2] = (60 * k) % 256
            mask = np.zeros((H, W), np.uint8)
            x0, y0, x1, y1 = MASK_BOX
            mask[y0:y1, x0:x1] = 255
            image_png = f"pictures/{size}/{image_id}_photo.png"
            mask_png = f"pictures/{size}/{image_id}_{category.replace(' ', '_')}_mask.png"
            if pictures:
                _png(run_dir / image_png, photo)
                _png(run_dir / mask_png, mask)
            for c, cnn in enumerate(cnns):
                for m, method in enumerate(methods):
                    if p_of is None:
                        p = round(0.1 + 0.15 * m + 0.05 * (c % 3) + 0.02 * (k % 5) + rng.uniform(0, 0.05), 4)
                    else:
                        p = p_of(image_id, category, cnn, size, method)
                    map_png = f"pictures/{size}/{cnn}/{image_id}_{category.replace(' ', '_')}_{method}.png"
                    if pictures:
                        if method == "gradcam":
                            heat = np.zeros((H, W, 3), np.uint8)
                            heat[y0:y1, x0:x1, 0] = 230
                            heat[..., 2] = 120
                            _png(run_dir / map_png, heat)
                        else:
                            _png(run_dir / map_png, rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
                    nan = not math.isfinite(p)
                    records.append({
                        "id": image_id, "file": f"{image_id:012d}.jpg", "class": category, "method": method,
                        "CNN": cnn, "size": size, "group": "original" if size == "original" else "resized",
                        "height": H, "width": W, "P": p, "E": p * 10.0, "E_celk": 0.0 if nan else 10.0,
                        "chance": CHANCE, "lift": p / CHANCE, "pointing_hit": p > 0.5, "rma": p,
                        "target": 207, "target_name": "golden retriever", "target_rank": 1,
                        "top1": 207, "top1_name": "golden retriever",
                        "note": "all-zero map" if nan else "",
                        "image_png": image_png, "mask_png": mask_png, "map_png": map_png,
                    })
    if jsonl:
        # what `xcnn run` writes beside the store: the config, whose methods make up one unit
        (run_dir / "config.json").write_text(json.dumps({"config": {"methods": list(methods)}}))
        with open(run_dir / "records.jsonl", "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
    if csv:
        import pandas as pd

        pd.DataFrame(records).to_csv(run_dir / "records.csv", index=False)
    return records
