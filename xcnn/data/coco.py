"""COCO-format instance annotations: per-category object masks and seeded image selection."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from xcnn.data.images import load_image
from xcnn.errors import XcnnError

log = logging.getLogger(__name__)

# Reasons an image is passed over by `CocoDataset.select` (keys of its `skipped` dict).
TOO_SMALL = "object too small"
MISSING = "file missing"
UNREADABLE = "file unreadable"
WRONG_SIZE = "file size differs from annotation"

# Called on an image file before it is checked; may create the file (the downloader does)
# and returns a skip reason, or None when the file should now be there.
Prepare = Callable[[Path, dict], "str | None"]


@dataclass(frozen=True)
class Sample:
    image_id: int
    file: Path  # absolute path of the image
    category: str  # COCO category name, e.g. "traffic light"
    mask: np.ndarray  # bool H×W at the image's original resolution, union of the category's instances (NOT dilated)


class CocoDataset:
    """A COCO-format instances file and the folder holding its images."""

    def __init__(self, ann_file: str | Path, image_dir: str | Path) -> None:
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir).absolute()
        self.coco = _load_coco(self.ann_file)
        self._by_name = {c["name"].strip().lower(): c for c in self.coco.cats.values()}

    @property
    def categories(self) -> list[str]:
        """Category names in the file, by category id."""
        return [self.coco.cats[i]["name"] for i in sorted(self.coco.cats)]

    def category(self, name: str) -> dict:
        """The file's category record for `name` (case-insensitive)."""
        cat = self._by_name.get(name.strip().lower())
        if cat is None:
            raise XcnnError(
                f"category {name!r} is not in {self.ann_file}; it has: {', '.join(self.categories)}"
            )
        return cat

    def mask(self, image_id: int, category: str) -> np.ndarray:
        """Union of the category's instances (polygons, RLEs, crowds) in the image, bool H×W."""
        cat = self.category(category)
        info = self._image(image_id)
        mask = np.zeros((info["height"], info["width"]), dtype=bool)
        for ann in self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id], catIds=[cat["id"]], iscrowd=None)):
            try:
                with warnings.catch_warnings():
                    # pycocotools' decode trips a NumPy 2 copy-keyword DeprecationWarning per call.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    mask |= self.coco.annToMask(ann).astype(bool)
            except Exception as err:  # pycocotools raises bare Exceptions/TypeErrors on bad segmentations
                raise XcnnError(
                    f"annotation {ann.get('id')} of image {image_id} in {self.ann_file} has an unreadable "
                    f"segmentation ({type(err).__name__}: {err}); fix or remove it"
                ) from None
        return mask

    def candidates(self, category: str, seed: int) -> list[int]:
        """All image ids holding `category`, in the seeded order `select` walks them.

        The ids are sorted before shuffling, so the order depends only on the seed, the
        category id and the set of images, not on the order of the file.
        """
        cat = self.category(category)
        ids = np.array(sorted(set(self.coco.catToImgs.get(cat["id"], []))), dtype=np.int64)
        rng = np.random.default_rng([int(seed), int(cat["id"])])
        return [int(i) for i in rng.permutation(ids)]

    def select(
        self,
        categories: Sequence[str] | str,
        per_category: int,
        seed: int,
        min_area: float = 0.01,
        *,
        prepare: Prepare | None = None,
    ) -> tuple[list[Sample], dict[str, int]]:
        """Choose `per_category` usable images per category, reproducibly from `seed`.

        Each category's images are walked in the order of `candidates(category, seed)`;
        an image is skipped when its object covers less than `min_area` of it or its file
        is missing, unreadable or of another size than annotated. Returns the samples
        (categories in the order given, one Sample per image and category) and the
        skip counts by reason. `prepare` (used by the downloader) is called on each file
        that passes the area check, before the file is looked at.
        """
        if isinstance(categories, str):
            categories = [c for c in categories.split(",")]
        names = list(dict.fromkeys(self.category(c)["name"] for c in categories if c.strip()))
        if not names:
            raise XcnnError("no category given; name at least one, e.g. 'zebra'")
        if per_category < 1:
            raise XcnnError(f"images per category must be >= 1, got {per_category}")
        if not 0 <= min_area < 1:
            raise XcnnError(f"min_area is a fraction of the image in [0, 1), got {min_area}")
        samples: list[Sample] = []
        skipped: Counter[str] = Counter()
        short: list[str] = []
        for name in names:
            chosen = 0
            for image_id in self.candidates(name, seed):
                if chosen == per_category:
                    break
                sample, reason = self._check(image_id, name, min_area, prepare)
                if sample is None:
                    skipped[reason] += 1
                    continue
                samples.append(sample)
                chosen += 1
            if chosen < per_category:
                short.append(f"{name} {chosen}")
        if short:
            log.warning("fewer usable images than the %d asked per category: %s", per_category, ", ".join(short))
        return samples, dict(skipped)

    def _check(
        self, image_id: int, category: str, min_area: float, prepare: Prepare | None
    ) -> tuple[Sample | None, str]:
        mask = self.mask(image_id, category)
        if mask.mean() < min_area or not mask.any():
            return None, TOO_SMALL
        info = self._image(image_id)
        file = self.image_dir / info["file_name"]
        if prepare is not None:
            reason = prepare(file, info)
            if reason is not None:
                return None, reason
        if not file.is_file():
            log.debug("image %d: %s missing", image_id, file)
            return None, MISSING
        try:
            shape = load_image(file).shape[:2]
        except XcnnError as err:
            log.warning("skipping image %d: %s", image_id, err)
            return None, UNREADABLE
        if shape != mask.shape:
            log.warning(
                "skipping image %d: %s is %d×%d pixels but %s says %d×%d",
                image_id, file, shape[1], shape[0], self.ann_file, mask.shape[1], mask.shape[0],
            )
            return None, WRONG_SIZE
        return Sample(image_id, file, category, mask), ""

    def _image(self, image_id: int) -> dict:
        info = self.coco.imgs.get(image_id)
        if info is None:
            raise XcnnError(f"image id {image_id} is not in {self.ann_file}")
        if not {"file_name", "height", "width"} <= info.keys():
            raise XcnnError(f"image {image_id} in {self.ann_file} lacks file_name/height/width; fix the file")
        return info


def _load_coco(ann_file: Path) -> COCO:
    if not ann_file.is_file():
        raise XcnnError(f"annotation file {ann_file} not found; download it (xcnn data coco) or fix the path")
    try:
        with ann_file.open("rb") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise XcnnError(f"cannot read annotation file {ann_file} ({err}); it is not valid JSON, download it again") from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:
        raise XcnnError(f"annotation file {ann_file} is not COCO instances format: no {', '.join(missing)} list")
    coco = COCO()
    coco.dataset = data
    # pycocotools prints progress on stdout; a library should stay quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            coco.createIndex()
        except (KeyError, TypeError) as err:
            raise XcnnError(f"annotation file {ann_file} has a malformed record (missing {err}); fix the file") from None
    log.info("%s: %d images, %d annotations, %d categories", ann_file, len(coco.imgs), len(coco.anns), len(coco.cats))
    return coco
