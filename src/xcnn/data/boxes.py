"""ImageNet-style bounding boxes: one Pascal-VOC-style XML per photo, boxes of a WordNet id unioned into its mask.

As ILSVRC2012 ships them (`LOC_val` / `val` XMLs)::

    <annotation><filename>ILSVRC2012_val_00000001</filename>
      <size><width>500</width><height>375</height></size>
      <object><name>n01751748</name><bndbox><xmin>111</xmin><ymin>108</ymin><xmax>441</xmax><ymax>375</ymax></bndbox></object>
    </annotation>

The photo is `image_dir / <XML's folder under box_dir> / <filename>`; a filename without a
suffix (ILSVRC's) takes the first of .JPEG, .jpg, .jpeg, .png that exists. The category is the
WordNet id. Coordinates follow the PASCAL VOC convention: 1-based pixels, both ends included
(xmin = 1 is the first column), clipped to the image.
"""
from __future__ import annotations

import hashlib
import logging
import math
import posixpath
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xcnn.data.dataset import Dataset, ImageId, listing_digest, require_dir
from xcnn.data.paths import inside
from xcnn.errors import XcnnError

log = logging.getLogger(__name__)

_SUFFIXES = (".JPEG", ".jpg", ".jpeg", ".png")

Box = tuple[int, int, int, int]  # x0, y0, x1, y1: 0-based, end excluded


@dataclass(frozen=True)
class _Photo:
    file: Path
    xml: str  # relative to box_dir, for messages and the digest
    xml_hash: str
    size: tuple[int, int]  # (h, w) by the XML
    boxes: dict[str, list[Box]]  # wnid -> its boxes


class BoxDataset(Dataset):
    def __init__(self, image_dir: str | Path, box_dir: str | Path) -> None:
        self.image_dir = require_dir(Path(image_dir), "image folder", "give data.image_dir = the folder of the photos")
        self.box_dir = require_dir(Path(box_dir), "box folder",
                                   "give data.box_dir = the folder of one Pascal-VOC-style XML per photo")
        self.source = str(self.box_dir)
        # sorted, so which of two XMLs naming one photo is reported does not depend on the listing
        xmls = sorted(p.relative_to(self.box_dir).as_posix() for p in self.box_dir.rglob("*.xml"))
        if not xmls:
            raise XcnnError(f"no .xml file under {self.box_dir}; give data.box_dir = the folder of one "
                            "Pascal-VOC-style XML per photo (as ILSVRC2012 ships its boxes)")
        self._photos: dict[str, _Photo] = {}
        for rel in xmls:
            image, photo = self._read(rel)
            if image in self._photos:
                raise XcnnError(f"{self.box_dir / self._photos[image].xml} and {self.box_dir / rel} both describe "
                                f"photo {image}; keep one XML per photo")
            self._photos[image] = photo
        self._categories = sorted({w for p in self._photos.values() for w in p.boxes})
        log.info("%s: %d photos with boxes of %d WordNet ids", self.box_dir, len(self._photos), len(self._categories))

    @property
    def categories(self) -> list[str]:
        return list(self._categories)

    def digest(self) -> str:
        return listing_digest("imagenet-boxes", [(image, p.xml_hash) for image, p in self._photos.items()])

    def mask(self, image_id: ImageId, category: str) -> np.ndarray:
        photo = self._photos[str(image_id)]
        mask = np.zeros(photo.size, dtype=bool)
        for x0, y0, x1, y1 in photo.boxes.get(self.name(category), []):
            mask[y0:y1, x0:x1] = True
        return mask

    def _images(self, category: str) -> list[ImageId]:
        return [image for image, p in self._photos.items() if category in p.boxes]

    def _size(self, image_id: ImageId) -> tuple[int, int]:
        return self._photos[str(image_id)].size

    def _file(self, image_id: ImageId) -> Path:
        return self._photos[str(image_id)].file

    def _size_source(self, image_id: ImageId) -> str:
        return str(self.box_dir / self._photos[str(image_id)].xml)

    def _read(self, rel: str) -> tuple[str, _Photo]:
        """One XML -> (the photo's path relative to image_dir, its entry)."""
        path = inside(self.box_dir, rel, f"box file {rel} under {self.box_dir}")
        if not path.is_file():
            state = "a folder" if path.is_dir() else "a link to nothing"
            raise XcnnError(f"{path} is {state}, not an XML file; rename or move it out of {self.box_dir}, "
                            "which should hold one Pascal-VOC-style XML per photo")
        data = path.read_bytes()
        try:
            root = ET.fromstring(data)
        except ET.ParseError as err:
            raise XcnnError(f"cannot parse {path} ({err}); fix or remove the file") from None
        except LookupError as err:  # the XML declares an encoding Python does not know
            raise XcnnError(f"cannot parse {path} ({err}); declare UTF-8 or another real text encoding") from None

        def number(node: ET.Element | None, tag: str) -> int:
            text = node.findtext(tag) if node is not None else None
            try:
                value = float(text or "")
            except ValueError:
                value = math.nan
            if not math.isfinite(value):  # round() of inf overflows, of nan fails
                raise XcnnError(f"{path}: <{tag}> is {text!r}, not a finite number; fix the file")
            return round(value)

        w, h = number(root.find("size"), "width"), number(root.find("size"), "height")
        if w < 1 or h < 1:
            raise XcnnError(f"{path}: <size> says {w}×{h} pixels; fix the file")
        boxes: dict[str, list[Box]] = {}
        for obj in root.iter("object"):
            wnid, box = (obj.findtext("name") or "").strip(), obj.find("bndbox")
            if not wnid or box is None:
                raise XcnnError(f"{path}: an <object> without <name> or <bndbox>; fix the file")
            xmin, ymin, xmax, ymax = (number(box, t) for t in ("xmin", "ymin", "xmax", "ymax"))
            x0, y0, x1, y1 = max(xmin, 1) - 1, max(ymin, 1) - 1, min(xmax, w), min(ymax, h)
            if x1 <= x0 or y1 <= y0:
                raise XcnnError(f"{path}: box {xmin},{ymin},{xmax},{ymax} of {wnid} is empty inside the "
                                f"{w}×{h} image; fix the file")
            boxes.setdefault(wnid, []).append((x0, y0, x1, y1))
        name = (root.findtext("filename") or "").strip() or Path(rel).stem
        image = posixpath.join(posixpath.dirname(rel), name)
        file = inside(self.image_dir, image, f"<filename> of {path}")
        if not posixpath.splitext(name)[1]:  # ILSVRC names its photos without the suffix
            image += next((s for s in _SUFFIXES if file.with_name(file.name + s).is_file()), _SUFFIXES[0])
            file = inside(self.image_dir, image, f"<filename> of {path}")
        image = posixpath.normpath(image)
        return image, _Photo(file, rel, hashlib.sha256(data).hexdigest(), (h, w), boxes)
