"""A plain folder: photos, mask PNGs, and `masks.csv` saying which mask shows which category in which photo.

    image,mask,category
    photos/kitchen.jpg,masks/kitchen_cup.png,cup
    photos/kitchen.jpg,masks/kitchen_cup2.png,cup      <- a second row of one photo and category: unioned

Paths are relative to the folder and must stay inside it. A mask is an image of the photo's
size whose nonzero pixels (in any colour band; alpha ignored) are the object.
"""
from __future__ import annotations

import csv
import logging
import posixpath
from pathlib import Path

import numpy as np

from xcnn.data.dataset import Dataset, ImageId, file_hash, listing_digest, require_dir
from xcnn.data.images import image_size, load_labels
from xcnn.data.paths import inside
from xcnn.errors import XcnnError

log = logging.getLogger(__name__)

CSV_NAME = "masks.csv"
COLUMNS = ("image", "mask", "category")


class FolderDataset(Dataset):
    def __init__(self, root: str | Path) -> None:
        self.root = require_dir(Path(root), "data folder", f"give data.root = the folder holding {CSV_NAME}")
        # confined like every path it names: a masks.csv linked from elsewhere is refused, as VOC's split file
        self.csv = inside(self.root, CSV_NAME, f"data.root {self.root}")
        self.source = str(self.csv)
        if not self.csv.is_file():
            raise XcnnError(f"{self.csv} not found; write it with the columns {', '.join(COLUMNS)} "
                            "(paths relative to the folder)")
        self._photos: dict[str, Path] = {}  # image id (relative path) -> photo
        self._first: dict[str, Path] = {}  # image id -> its first mask, whose header gives the photo's size
        self._masks: dict[tuple[str, str], list[tuple[str, Path]]] = {}  # (image id, category) -> masks
        spelling: dict[str, str] = {}  # category names match case-insensitively; the first spelling is kept
        try:
            with self.csv.open(newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets write a BOM
                reader = csv.DictReader(f)
                missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise XcnnError(f"{self.csv} has no column {', '.join(missing)}; its first line must name "
                                    f"the columns {', '.join(COLUMNS)}")
                for row in reader:
                    line = reader.line_num
                    image, mask, category = (str(row[c] or "").strip() for c in COLUMNS)
                    if not (image and mask and category):
                        raise XcnnError(f"{self.csv} line {line}: give an image, a mask and a category, got {row}")
                    what = f"{self.csv} line {line}"
                    mask_file = inside(self.root, mask, what)
                    if not mask_file.is_file():
                        raise XcnnError(f"{what}: mask file {mask_file} not found; add it or fix the line")
                    image_id = posixpath.normpath(image)
                    self._photos[image_id] = inside(self.root, image, what)
                    self._first.setdefault(image_id, mask_file)
                    category = spelling.setdefault(category.lower(), category)
                    self._masks.setdefault((image_id, category), []).append((posixpath.normpath(mask), mask_file))
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise XcnnError(f"cannot read {self.csv} ({err}); save it as UTF-8 CSV") from None
        if not self._masks:
            raise XcnnError(f"{self.csv} lists no mask; add one line per photo, mask and category")
        self._categories = sorted(set(spelling.values()))
        self._sizes: dict[str, tuple[int, int]] = {}

    @property
    def categories(self) -> list[str]:
        return list(self._categories)

    def digest(self) -> str:
        return listing_digest("folder", [(image, category, rel, file_hash(file))
                                         for (image, category), masks in self._masks.items() for rel, file in masks])

    def mask(self, image_id: ImageId, category: str) -> np.ndarray:
        h, w = self._size(image_id)
        out = np.zeros((h, w), dtype=bool)
        for _, file in self._masks.get((str(image_id), self.name(category)), []):
            if image_size(file) != (h, w):  # before decoding it: a photo's masks share its size
                size = image_size(file)
                raise XcnnError(f"mask {file} is {size[1]}×{size[0]} pixels but another mask of {image_id} is "
                                f"{w}×{h}; every mask of a photo must have the photo's size")
            labels, mode = load_labels(file, h * w)
            if labels.ndim == 3:
                # an alpha band says how to draw, not what is object
                out |= (labels[..., :-1] if mode.endswith(("A", "a")) else labels).any(axis=2)
            else:
                out |= labels != 0
        return out

    def _images(self, category: str) -> list[ImageId]:
        return [image for image, c in self._masks if c == category]

    def _size(self, image_id: ImageId) -> tuple[int, int]:
        """By the photo's first mask (in the order of the csv): the photo itself is read later."""
        image = str(image_id)
        if image not in self._sizes:
            self._sizes[image] = image_size(self._first[image])
        return self._sizes[image]

    def _file(self, image_id: ImageId) -> Path:
        return self._photos[str(image_id)]

    def _size_source(self, image_id: ImageId) -> str:
        return f"its mask {self._first[str(image_id)]}"
