"""Hand-made RUN_DIRs for the report tests: known P values and tiny PNGs, no model involved."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from xcnn.experiment.store import JsonlStore, check_key

METHODS = ("gradient", "deconvnet", "guided_backprop", "gradcam", "guided_gradcam")
# Eleven methods and the three baselines: what the report must stay readable with.
MANY_METHODS = METHODS + ("input_x_gradient", "gradcam_pp", "xgradcam", "layercam", "scorecam", "smoothgrad")
BASELINES = ("uniform", "centre", "edges")
HEAT = {"gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam", *BASELINES}
W, H = 40, 30
# Mask: a 16×12 rectangle -> chance = 192 / 1200 = 0.16 at every size.
MASK_BOX = (8, 6, 24, 18)  # x0, y0, x1, y1
CHANCE = (MASK_BOX[2] - MASK_BOX[0]) * (MASK_BOX[3] - MASK_BOX[1]) / (W * H)
CONFIG = {"hash": "0" * 64, "source": "configs/fake.toml", "xcnn": "0.1.0",
          "config": {"demo": True, "categories": [], "growth": 0.2, "sizes": [],
                     "models": [{"name": "mobilenet_v2", "gradcam_layer": "features.18", "weights": None}]}}


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _map(method: str, rng: np.random.Generator) -> np.ndarray:
    x0, y0, x1, y1 = MASK_BOX
    if method in HEAT:  # a heat map over the photo, hot on the object
        heat = np.zeros((H, W, 3), np.uint8)
        heat[y0:y1, x0:x1, 0] = 230
        heat[..., 2] = 120
        return heat
    return rng.integers(0, 255, (H, W, 3), dtype=np.uint8)


def make_run_dir(
    run_dir: Path,
    p_of: Callable[[int, str, str, str, str], float] | None = None,
    images: tuple[tuple[int, str], ...] = ((1, "dog"), (2, "traffic light")),
    cnns: tuple[str, ...] = ("mobilenet_v2", "resnet18"),
    sizes: tuple[str, ...] = ("original", "224"),
    methods: tuple[str, ...] = METHODS,
    baselines: tuple[str, ...] = (),
    rank_of: Callable[[int, str, str], int] | None = None,
    pictures: bool = True,
    csv: bool = False,
    jsonl: bool = True,
) -> list[dict]:
    """Write records (and PNGs) for every (image, category, CNN, size, method), plus one record
    per (image, category, size, baseline) with CNN "none"; return the records.

    `p_of(id, category, cnn, size, method)` gives P (NaN allowed; cnn is "none" for baselines);
    default: a spread of values. `rank_of(id, category, cnn)` gives the target's rank (default 1).
    records.jsonl is written through the store, one write group per unit, as `xcnn run` does.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    units: list[list[dict]] = []
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
            for c, cnn in enumerate((*cnns, "none") if baselines else cnns):
                unit = []
                for m, method in enumerate(methods if cnn != "none" else baselines):
                    if p_of is not None:
                        p = p_of(image_id, category, cnn, size, method)
                    elif cnn == "none":
                        p = round(CHANCE + 0.03 * m + rng.uniform(0, 0.05), 4)
                    else:
                        p = round(0.05 + 0.7 * m / len(methods) + 0.04 * (c % 3) + 0.02 * (k % 5)
                                  + rng.uniform(0, 0.04), 4)
                    map_png = f"pictures/{size}/{cnn}/{image_id}_{category.replace(' ', '_')}_{method}.png"
                    if pictures:
                        _png(run_dir / map_png, _map(method, rng))
                    nan = not math.isfinite(p)
                    rank = None if cnn == "none" else rank_of(image_id, category, cnn) if rank_of else 1
                    unit.append({
                        "id": image_id, "file": f"{image_id:012d}.jpg", "class": category, "method": method,
                        "CNN": cnn, "size": size, "group": "original" if size == "original" else "resized",
                        "height": H, "width": W, "P": p, "E": p * 10.0, "E_celk": 0.0 if nan else 10.0,
                        "chance": CHANCE, "lift": p / CHANCE, "pointing_hit": p > 0.5, "rma": p,
                        "target": None if cnn == "none" else 207,
                        "target_name": "" if cnn == "none" else "golden retriever",
                        "target_rank": rank, "target_prob": None if cnn == "none" else 0.5 / rank,
                        "top1": 207, "top1_name": "golden retriever",
                        "note": "all-zero map" if nan else "",
                        "image_png": image_png, "mask_png": mask_png, "map_png": map_png,
                    })
                units.append(unit)
    config = json.loads(json.dumps(CONFIG))
    config["config"].update(methods=list(methods), categories=sorted({c for _, c in images}), sizes=list(sizes))
    (run_dir / "config.json").write_text(json.dumps(config))
    if jsonl:
        with JsonlStore(run_dir / "records.jsonl") as store:
            for unit in units:
                store.append(unit)
    records = [r for unit in units for r in unit]
    if csv:
        import pandas as pd

        pd.DataFrame(records).to_csv(run_dir / "records.csv", index=False)
    return records


def rewrite_records(run_dir: Path, records: list[dict]) -> None:
    """Replace records.jsonl by these records, written through the store (one group per unit)."""
    path = run_dir / "records.jsonl"
    path.unlink(missing_ok=True)
    units: dict[tuple, list[dict]] = {}
    for rec in records:
        units.setdefault((rec["CNN"], rec["size"], str(rec["id"]), rec["class"]), []).append(rec)
    with JsonlStore(path) as store:
        for unit in units.values():
            store.append(unit)


def write_checks(run_dir: Path, rows: list[dict]) -> None:
    """Validity-check rows into RUN_DIR/checks.jsonl through the store, one group per row."""
    with JsonlStore(run_dir / "checks.jsonl", key=check_key) as store:
        for row in rows:
            store.append([row])
