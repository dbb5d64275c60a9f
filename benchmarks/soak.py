"""Memory over a long run: 10,000 units of a small random-weight model through `run`, RSS sampled.

    python benchmarks/soak.py [--units 10000] [--size 32]

Builds a synthetic COCO set (noise photos, one rectangle mask each) in a temporary folder,
runs the experiment (resnet18, random weights, Gradient + Grad-CAM, one small size) and samples
the process's resident memory every 0.5 s from a thread. Prints RSS after warm-up (the first
10 % of the units) and at the end; the target is growth under 50 MB. Run by hand.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from xcnn.experiment import load_config, run  # noqa: E402
from xcnn.experiment.layout import RECORDS_FILE  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_data(root: Path, photos: int) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(1, photos + 1):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "height": 48, "width": 48})
        anns.append({"id": i, "image_id": i, "category_id": 18, "iscrowd": 0, "area": 400.0,
                     "bbox": [10, 10, 20, 20], "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]})
    cats = [{"id": 18, "name": "dog", "supercategory": "animal"}]
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    cfg = root / "soak.toml"
    cfg.write_text(f"""
[data]
ann_file = "ann.json"
image_dir = "images"
categories = ["dog"]
images_per_category = {photos}

[[models]]
name = "resnet18"
weights = "random"

[run]
sizes = [32]
methods = ["gradient", "gradcam"]
batch_size = 16
device = "cpu"
""")
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=10_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    samples: list[tuple[int, float]] = []  # (bytes in records.jsonl, RSS): progress through the units
    stop = threading.Event()
    start = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "run" / RECORDS_FILE

        def sample() -> None:
            while not stop.is_set():
                samples.append((store.stat().st_size if store.exists() else 0, rss_mb()))
                stop.wait(0.5)

        cfg = make_data(Path(tmp), args.units)
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        summary = run(load_config(cfg), Path(tmp) / "run")
        stop.set()
        thread.join()
        final = store.stat().st_size
    took = time.perf_counter() - start
    # The units phase only: from 10 % of the records (warm-up done) until the last record; the
    # selection before and the exports after are not what a long run accumulates.
    warm = [m for size, m in samples if 0.1 * final <= size < final]
    print(f"units {summary.units_total}, records {summary.records}, {took:.0f} s, {len(warm)} samples")
    print(f"RSS after warm-up {warm[0]:.0f} MB, peak {max(warm):.0f} MB, last {warm[-1]:.0f} MB: "
          f"growth {warm[-1] - warm[0]:+.0f} MB (peak {max(warm) - warm[0]:+.0f} MB); target < 50 MB")


if __name__ == "__main__":
    main()
