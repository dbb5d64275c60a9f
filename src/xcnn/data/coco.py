"""COCO-format instance annotations: per-category object masks and seeded image selection."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import numbers
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from xcnn.data.dataset import (
    MISSING,
    TOO_LARGE,
    TOO_SMALL,
    UNREADABLE,
    WRONG_SIZE,
    Dataset,
    ImageId,
    Prepare,
    Sample,
    check_selection,
    file_hash,
)
from xcnn.data.dataset import whole as _whole
from xcnn.data.paths import inside
from xcnn.errors import XcnnError, did_you_mean

log = logging.getLogger(__name__)

__all__ = ["CocoDataset", "Prepare", "Sample", "check_selection",
           "TOO_SMALL", "MISSING", "UNREADABLE", "WRONG_SIZE", "TOO_LARGE"]


class CocoDataset(Dataset):
    """A COCO-format instances file and the folder holding its images."""

    def __init__(self, ann_file: str | Path, image_dir: str | Path) -> None:
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir).absolute()
        self.source = str(self.ann_file)
        self.coco = _load_coco(self.ann_file)
        self._by_name: dict[str, list[dict]] = {}
        for cat in sorted(self.coco.cats.values(), key=lambda c: c["id"]):
            self._by_name.setdefault(cat["name"].strip().lower(), []).append(cat)

    @property
    def categories(self) -> list[str]:
        """Category names in the file, by category id."""
        return [self.coco.cats[i]["name"] for i in sorted(self.coco.cats)]

    def digest(self) -> str:
        return coco_digest(self.ann_file)

    def category(self, name: str) -> dict:
        """The file's category record for `name` (case-insensitive; a name that two categories
        share up to case is refused rather than silently taking one of them)."""
        cats = self._by_name.get(name.strip().lower())
        if cats is None:
            hint = did_you_mean(name.strip(), self.categories) or f"it has: {', '.join(self.categories)}"
            raise XcnnError(f"category {name!r} is not in {self.ann_file}; {hint}")
        if len(cats) > 1:
            listed = ", ".join(f"{c['name']!r} (id {c['id']})" for c in cats)
            raise XcnnError(f"category {name!r} is ambiguous in {self.ann_file}: {listed} differ only in case; "
                            "rename one of them in the file")
        return cats[0]

    def name(self, category: str) -> str:
        return str(self.category(category)["name"])

    def mask(self, image_id: ImageId, category: str) -> np.ndarray:
        """Union of the category's instances (polygons, RLEs, crowds) in the image, bool H×W."""
        cat = self.category(category)
        info = self._image(image_id)
        h, w = info["height"], info["width"]
        mask = np.zeros((h, w), dtype=bool)
        for ann in self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id], catIds=[cat["id"]], iscrowd=None)):
            # pycocotools answers a malformed segmentation with bare Exceptions, TypeErrors or a
            # silently wrong mask, so its shape is checked here first; what it can still refuse
            # (a compressed RLE string that does not decode) is a ValueError.
            problem = _segmentation_problem(ann.get("segmentation"), h, w)
            if problem is None:
                try:
                    with warnings.catch_warnings():
                        # pycocotools' decode trips a NumPy 2 copy-keyword DeprecationWarning per call.
                        warnings.simplefilter("ignore", DeprecationWarning)
                        mask |= self.coco.annToMask(ann).astype(bool)
                except ValueError as err:
                    problem = f"a segmentation pycocotools cannot decode ({err})"
            if problem is not None:
                raise XcnnError(
                    f"annotation {ann['id']} of image {image_id} in {self.ann_file} has {problem}; fix or remove it"
                )
        return mask

    def _category_key(self, category: str) -> int:
        return int(self.category(category)["id"])

    def _images(self, category: str) -> list[ImageId]:
        return list(self.coco.catToImgs.get(self.category(category)["id"], []))

    def _size(self, image_id: ImageId) -> tuple[int, int]:
        info = self._image(image_id)
        return info["height"], info["width"]

    def _file(self, image_id: ImageId) -> Path:
        return inside(self.image_dir, self._image(image_id)["file_name"], f"image {image_id} in {self.ann_file}")

    def _record(self, image_id: ImageId) -> dict:
        return self._image(image_id)

    def _image(self, image_id: ImageId) -> dict:
        info = self.coco.imgs.get(image_id)
        if info is None:
            raise XcnnError(f"image id {image_id} is not in {self.ann_file}; use an id from its \"images\" list")
        return info


def coco_digest(ann_file: str | Path) -> str:
    """The annotation file's content (it names every photo and draws every mask), not its path."""
    return "sha256:" + file_hash(Path(ann_file))


def _segmentation_problem(seg: object, h: int, w: int) -> str | None:
    """What keeps `seg` from being COCO polygons or an RLE of an h×w image, or None.

    Everything pycocotools' C code would trip on is caught here, before it is called: a
    polygon point far outside the image overflows its int arithmetic (a segfault), and RLE
    runs that do not add up to h×w make it read uninitialised memory or write past its mask.
    """
    if isinstance(seg, list):
        for poly in seg:
            if not (isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0 and all(map(_coordinate, poly))):
                return "a polygon that is not a list of 3 or more x, y number pairs"
            problem = _polygon_problem(poly, h, w)
            if problem is not None:
                return problem
        return None if seg else "an empty polygon list"
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(type(s) is int for s in size)) or size != [h, w]:
            return f"an RLE of size {size!r}, not the image's [{h}, {w}]"
        if isinstance(counts, str):
            runs = _rle_runs(counts)
            if runs is not None and sum(runs) == h * w:
                return None
            return (f"compressed RLE counts {_short(counts)} that do not decode to runs adding up to {h}×{w} "
                    "pixels (COCO's characters '0' to 'o', each run complete and >= 0)")
        if isinstance(counts, list) and all(_whole(c) and c >= 0 for c in counts) and sum(counts) == h * w:
            return None
        return "RLE counts that are neither a string nor whole numbers >= 0 adding up to height × width"
    return f"a segmentation of type {type(seg).__name__}, neither polygons nor an RLE"


def _coordinate(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


# How far beyond the image a polygon may reach, in image sizes: annotation tools leave points
# a little outside and those are clipped, but a point 1e10 away overflows pycocotools' ints.
_REACH_BEYOND, _REACH_BEFORE = 4, 3
_MAX_COORDINATE = 400_000_000  # pycocotools scales points by 5 into a C int


def _polygon_problem(poly: list, h: int, w: int) -> str | None:
    xs, ys = poly[0::2], poly[1::2]
    lo_x, hi_x = max(-_REACH_BEFORE * w, -_MAX_COORDINATE), min(_REACH_BEYOND * w, _MAX_COORDINATE)
    lo_y, hi_y = max(-_REACH_BEFORE * h, -_MAX_COORDINATE), min(_REACH_BEYOND * h, _MAX_COORDINATE)
    for x, y in zip(xs, ys, strict=True):
        if not (lo_x <= x <= hi_x and lo_y <= y <= hi_y):
            return (f"a polygon point ({x:g}, {y:g}) far outside the {w}×{h} image (points must lie within "
                    f"x {lo_x}..{hi_x}, y {lo_y}..{hi_y})")
    return None


# pycocotools shifts each 5-bit character group of a count as a C int: more than 6 characters
# overflow it, so a longer count would decode differently there than here (runs up to 2**29).
_MAX_RLE_CHARS = 6


def _rle_runs(counts: str) -> list[int] | None:
    """The run lengths a COCO compressed RLE string encodes, or None when it is not one.

    pycocotools' own decoder reads past the end of a string cut inside a count and trusts
    its runs to fill the mask exactly, so a malformed string gives a mask of whatever was in
    memory: it is read here in Python, character by character, as rleFrString does. Each
    count is 5-bit groups, least significant first, in characters '0' + 0..63; bit 0x20 says
    another group follows, bit 0x10 of the last group is the sign; from the fourth count on,
    the value is a difference to the count two before.
    """
    runs: list[int] = []
    value = groups = 0
    for char in counts:
        c = ord(char) - 48
        if not 0 <= c < 64 or groups == _MAX_RLE_CHARS:
            return None
        value |= (c & 0x1F) << (5 * groups)
        groups += 1
        if c & 0x20:
            continue
        if c & 0x10:  # negative: sign-extend
            value -= 1 << (5 * groups)
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            return None
        runs.append(value)
        value = groups = 0
    return runs if groups == 0 else None


# Each list of a COCO instances file: the noun for its records and their required fields' kinds.
_RECORDS: dict[str, tuple[str, dict[str, str]]] = {
    "images": ("image", {"file_name": "text", "height": "size", "width": "size"}),
    "categories": ("category", {"name": "text"}),
    "annotations": ("annotation", {"image_id": "id", "category_id": "id"}),
}
# A field kind: its test, and what a valid value is, for the message. JSON gives plain ints
# and strs, so exact type tests do (and are fast enough for the 860 000 annotations of train2017).
_KINDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "text": (lambda v: type(v) is str, "a string"),
    "id": (lambda v: type(v) is int, "a whole number"),
    "size": (lambda v: type(v) is int and v >= 1, "a whole number >= 1"),
}


def _check_records(data: dict, ann_file: Path) -> None:
    """XcnnError naming the first record pycocotools would choke on or silently mis-index.

    Duplicate ids would let one image's annotations land on another photo; an annotation
    pointing at an absent image or category would fail deep inside pycocotools or selection.
    """
    ids = {key: _ids(data[key], key, noun, fields, ann_file) for key, (noun, fields) in _RECORDS.items()}
    for field, key in (("image_id", "images"), ("category_id", "categories")):
        known, noun = ids[key], _RECORDS[key][0]
        for ann in data["annotations"]:
            if ann[field] not in known:
                raise XcnnError(
                    f"annotation {ann['id']} in {ann_file} refers to {noun} {ann[field]}, which is not in its "
                    f"\"{key}\" list; add the {noun} or remove the annotation"
                )


def _ids(records: list, key: str, noun: str, fields: dict[str, str], ann_file: Path) -> set[int]:
    """The ids of one list, after checking each record's id and required fields."""
    tests = [(field, *_KINDS[kind]) for field, kind in fields.items()]
    ids: list[int] = []
    for i, rec in enumerate(records):
        if type(rec) is not dict:
            raise XcnnError(f"\"{key}\"[{i}] in {ann_file} is {_short(rec)}, not a record; remove it or fix the file")
        ident = rec.get("id")
        if type(ident) is not int:
            raise XcnnError(f"\"{key}\"[{i}] in {ann_file} has 'id': {_short(ident)}, not a whole number; fix the file")
        for field, valid, wanted in tests:
            if field not in rec:
                raise XcnnError(f"{noun} {ident} in {ann_file} has no {field!r}; fix the file")
            if not valid(rec[field]):
                raise XcnnError(f"{noun} {ident} in {ann_file} has {field!r}: {_short(rec[field])}, not {wanted}; fix the file")
        ids.append(ident)
    unique = set(ids)
    if len(unique) < len(ids):
        twice = sorted(i for i, n in Counter(ids).items() if n > 1)
        listed = ", ".join(map(str, twice[:10])) + (f" and {len(twice) - 10} more" if len(twice) > 10 else "")
        raise XcnnError(f"{ann_file} lists {noun} id {listed} more than once; every {noun} needs its own id, fix the file")
    return unique


def _short(value: object) -> str:
    """A value for a one-line message: its repr, cut short, with its JSON type when that helps."""
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{text} ({type(value).__name__})" if isinstance(value, str) else text


def _load_coco(ann_file: Path) -> COCO:
    if ann_file.is_dir():
        raise XcnnError(f"annotation file {ann_file} is a folder; give data.ann_file = a COCO instances JSON file")
    if not ann_file.is_file():
        raise XcnnError(f"annotation file {ann_file} not found; download it (xcnn data coco) or fix the path")
    try:
        with ann_file.open("rb") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:  # ValueError: JSONDecodeError, UnicodeDecodeError, a 5000-digit number
        raise XcnnError(f"cannot read annotation file {ann_file} ({err}); it is not valid JSON, download it again") from None
    except RecursionError:
        raise XcnnError(f"cannot read annotation file {ann_file}: its JSON is nested too deeply to be COCO "
                        "instances; download it again") from None
    missing = [k for k in ("images", "annotations", "categories")
               if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:
        raise XcnnError(f"annotation file {ann_file} is not COCO instances format: no {', '.join(missing)} list")
    _check_records(data, ann_file)
    coco = COCO()
    coco.dataset = data
    # pycocotools prints progress on stdout; a library should stay quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    log.info("%s: %d images, %d annotations, %d categories", ann_file, len(coco.imgs), len(coco.anns), len(coco.cats))
    return coco
