"""What every dataset format gives the experiment: categories, a seeded selection, a content digest.

Each format (coco.py, voc.py, boxes.py, folder.py) says only where its photos are, how big
they are by their annotation, and how to draw one category's mask; the selection walk, its
skip reasons and the checks on the photo file are written once, here, so the four formats
choose photos the same way.
"""
from __future__ import annotations

import hashlib
import json
import logging
import numbers
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from xcnn.data.images import DEFAULT_MAX_PIXELS, ImageTooLarge, load_image
from xcnn.errors import XcnnError, did_you_mean

log = logging.getLogger(__name__)

# Reasons an image is passed over by `Dataset.select` (keys of its `skipped` dict).
TOO_SMALL = "object too small"
MISSING = "file missing"
UNREADABLE = "file unreadable"
WRONG_SIZE = "file size differs from annotation"
TOO_LARGE = "image over the pixel budget"

ImageId = int | str  # a COCO image id, or a photo's path relative to the dataset's root

# Called on an image file before it is checked; may create the file (the downloader does)
# and returns a skip reason, or None when the file should now be there. The dict holds the
# image's "id", "file_name", "height" and "width" (for COCO: its record in the file).
Prepare = Callable[[Path, dict], "str | None"]


@dataclass(frozen=True)
class Sample:
    image_id: ImageId  # COCO image id, or the photo's path relative to the dataset root
    file: Path  # absolute path of the image
    category: str  # category name, e.g. "traffic light" (COCO), "n01751748" (ImageNet)
    mask: np.ndarray  # bool H×W at the image's original resolution, union of the category's instances (NOT dilated)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickled (a batch sent to a Ray actor), the mask travels bit-packed: 1/8 of the bool
        # array, e.g. 31 kB instead of 251 kB for a demo photo.
        return _unpickle_sample, (self.image_id, self.file, self.category, np.packbits(self.mask), self.mask.shape)


@dataclass(frozen=True)
class Skipped:
    """A photo the selection passed over for a category, and why (a run lists them in skipped.jsonl)."""

    image_id: ImageId
    category: str
    file: str  # the photo's name in the dataset (COCO's file_name; else its path in the folder)
    reason: str  # one of the reasons above (or a downloader's)
    detail: str = ""  # what was found, in words

    def row(self) -> dict[str, Any]:
        return {"image": self.image_id, "category": self.category, "file": self.file,
                "reason": self.reason, "detail": self.detail}


def _unpickle_sample(image_id: ImageId, file: Path, category: str, bits: np.ndarray, shape: tuple[int, ...]) -> Sample:
    mask = np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape).astype(bool)
    return Sample(image_id, file, category, mask)


class Dataset(ABC):
    """Photos with per-category object masks, and the seeded selection every format shares."""

    source: str  # the annotation file or folder, for messages
    skipped_photos: tuple[Skipped, ...] = ()  # what the last `select` passed over, in walk order

    @property
    @abstractmethod
    def categories(self) -> list[str]:
        """The category names the dataset holds."""

    @abstractmethod
    def digest(self) -> str:
        """The content hash that identifies a run's data: what the masks and the photo list
        depend on, never where the folder lies, so a moved folder keeps it and an edited
        mask changes it."""

    @abstractmethod
    def mask(self, image_id: ImageId, category: str) -> np.ndarray:
        """Union of the category's objects in the image, bool H×W at its stored resolution."""

    @abstractmethod
    def _images(self, category: str) -> Iterable[ImageId]:
        """Every image holding the (canonical) category, in any order."""

    @abstractmethod
    def _size(self, image_id: ImageId) -> tuple[int, int]:
        """(height, width) by the annotation, read without decoding the photo."""

    @abstractmethod
    def _file(self, image_id: ImageId) -> Path:
        """The photo's path (already confined to the dataset's folder)."""

    def name(self, category: str) -> str:
        """The dataset's own spelling of `category` (matched case-insensitively)."""
        key = category.strip().lower()
        for name in self.categories:
            if name.lower() == key:
                return name
        names = self.categories
        listed = ", ".join(names[:30]) + (f" and {len(names) - 30} more" if len(names) > 30 else "")
        hint = did_you_mean(category.strip(), names) or f"it has: {listed or 'none'}"
        raise XcnnError(f"category {category!r} is not in {self.source}; {hint}")

    def _category_key(self, category: str) -> int:
        """The number that, with the seed, fixes the category's order: its name's stable hash
        (COCO uses its category id), so adding another category leaves this one's order alone."""
        return int.from_bytes(hashlib.sha256(category.encode()).digest()[:8], "big") >> 1

    def _record(self, image_id: ImageId) -> dict:
        h, w = self._size(image_id)
        return {"id": image_id, "file_name": str(image_id), "height": h, "width": w}

    def _size_source(self, image_id: ImageId) -> str:
        """What gives the photo's size in `_size`, for messages (the annotation file by default)."""
        return self.source

    def skipped_jsonl(self) -> bytes:
        """`skipped_photos` as JSON lines: image, category, file, reason, detail."""
        return "".join(json.dumps(s.row(), ensure_ascii=False) + "\n" for s in self.skipped_photos).encode()

    def candidates(self, category: str, seed: int) -> list[ImageId]:
        """All images holding `category`, in the seeded order `select` walks them.

        The ids are sorted before shuffling, so the order depends only on the seed, the
        category and the set of images, not on the order of a file or a folder listing.
        """
        name = self.name(category)
        ids = sorted(set(self._images(name)))
        rng = np.random.default_rng([int(seed), self._category_key(name)])
        return [ids[i] for i in rng.permutation(len(ids))]

    def select(
        self,
        categories: Sequence[str] | str,
        per_category: int,
        seed: int,
        min_area: float = 0.01,
        *,
        prepare: Prepare | None = None,
        max_pixels: int | None = None,
    ) -> tuple[list[Sample], dict[str, int]]:
        """Choose `per_category` usable images per category, reproducibly from `seed`.

        Each category's images are walked in the order of `candidates(category, seed)`;
        an image is skipped when it has more pixels than `max_pixels` (default
        DEFAULT_MAX_PIXELS; by its annotation, then by its file's header), its object covers
        less than `min_area` of it, or its file is missing, unreadable or of another size
        than annotated. Returns the samples (categories in the order given, one Sample per
        image and category) and the skip counts by reason; each skipped photo, with its
        reason, is in `skipped_photos` until the next selection. `prepare` (used by the
        downloader) is called on each file that passes the area check, before the file is
        looked at. A file name leading outside the dataset's folder is an XcnnError.
        """
        check_selection(per_category, seed, min_area, max_pixels)
        if isinstance(categories, str):
            categories = categories.split(",")
        names = list(dict.fromkeys(self.name(c) for c in categories if c.strip()))
        if not names:
            raise XcnnError("no category given; name at least one, e.g. 'zebra'")
        budget = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        samples: list[Sample] = []
        passed: list[Skipped] = []
        short: list[str] = []
        self.skipped_photos = ()
        for name in names:
            chosen = 0
            for image_id in self.candidates(name, seed):
                if chosen == per_category:
                    break
                found = self._check(image_id, name, min_area, prepare, budget)
                if isinstance(found, Skipped):
                    passed.append(found)
                    continue
                samples.append(found)
                chosen += 1
            if chosen < per_category:
                short.append(f"{name} {chosen}")
        if short:  # the data, not a fault (a run logs it in its selection line too)
            log.debug("fewer usable images than the %d asked per category: %s", per_category, ", ".join(short))
        self.skipped_photos = tuple(passed)
        return samples, dict(Counter(s.reason for s in passed))

    def _check(
        self, image_id: ImageId, category: str, min_area: float, prepare: Prepare | None, budget: int
    ) -> Sample | Skipped:
        record = self._record(image_id)

        def skip(reason: str, detail: str, warn: bool = True) -> Skipped:
            (log.warning if warn else log.debug)("skipping image %s: %s", image_id, detail)
            return Skipped(image_id, category, str(record["file_name"]), reason, detail)

        h, w = record["height"], record["width"]
        if h * w > budget:  # before its mask, which is as large
            return skip(TOO_LARGE, f"{self._size_source(image_id)} says it is {w}×{h} pixels, over the budget "
                                   f"of {budget}")
        mask = self.mask(image_id, category)
        if mask.mean() < min_area or not mask.any():
            return skip(TOO_SMALL, f"its {category} covers {mask.mean():.2%} of it, under min_area {min_area}",
                        warn=False)
        file = self._file(image_id)
        if prepare is not None:
            reason = prepare(file, record)
            if reason is not None:  # the downloader has said why
                return skip(reason, reason, warn=False)
        if not file.is_file():
            return skip(MISSING, f"{file} missing", warn=False)
        try:
            # As stored, not turned by its EXIF orientation: the mask was drawn on the stored pixels.
            shape = load_image(file, max_pixels=budget).shape[:2]
        except ImageTooLarge as err:
            return skip(TOO_LARGE, str(err))
        except XcnnError as err:
            return skip(UNREADABLE, str(err))
        if shape != mask.shape:
            return skip(WRONG_SIZE, f"{file} is {shape[1]}×{shape[0]} pixels but {self._size_source(image_id)} "
                                    f"says {mask.shape[1]}×{mask.shape[0]}")
        return Sample(image_id, file, category, mask)


def check_selection(per_category: int, seed: int, min_area: float, max_pixels: int | None = None) -> None:
    """XcnnError unless these are valid settings for `Dataset.select` (checked before any work)."""
    if not whole(per_category) or per_category < 1:
        raise XcnnError(f"images per category must be a whole number >= 1, got {per_category!r}")
    if not whole(seed) or seed < 0:  # numpy's seeding refuses negative numbers
        raise XcnnError(f"the selection seed must be a whole number >= 0, got {seed!r}")
    if not isinstance(min_area, numbers.Real) or not 0 <= min_area < 1:
        raise XcnnError(f"min_area is a fraction of the image in [0, 1), got {min_area!r}")
    if max_pixels is not None and (not whole(max_pixels) or max_pixels < 1):
        raise XcnnError(f"max_pixels must be a whole number of pixels >= 1, got {max_pixels!r}")


def whole(value: object) -> TypeGuard[int]:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def listing_digest(fmt: str, entries: Iterable[Sequence[str]]) -> str:
    """The digest of a folder-based dataset: its format and the sorted (relative path, content
    hash, ...) entries, so neither the folder's place nor the listing order enter it."""
    text = json.dumps([fmt, sorted(list(e) for e in entries)], separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def require_dir(path: Path, what: str, hint: str) -> Path:
    """`path` as an absolute folder, or a one-line XcnnError naming it."""
    if not path.is_dir():
        raise XcnnError(f"{what} {path} is not a folder; {hint}")
    return path.absolute()
