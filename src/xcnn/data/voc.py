"""PASCAL VOC2012-style segmentation sets: instance masks from SegmentationObject, classes from SegmentationClass.

Layout under `root` (as VOCdevkit/VOC2012 ships it)::

    ImageSets/Segmentation/<split>.txt   one image name per line, e.g. 2007_000032
    JPEGImages/<name>.jpg                the photo
    SegmentationObject/<name>.png        palette PNG: index k = instance k, 0 background, 255 void
    SegmentationClass/<name>.png         palette PNG: index c = VOC class c (1..20), 0 background, 255 void

An instance's class is the majority class index under its pixels. The 255 "void" band that
VOC draws along object borders belongs to no object: it lies outside every mask, as
unlabelled pixels do in COCO. Class names are the COCO ones (aeroplane -> airplane, ...), so
the COCO -> ImageNet table serves VOC too. Masks are read in their stored orientation, like
the photos (no EXIF rotation).
"""
from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

import numpy as np

from xcnn.data.dataset import Dataset, ImageId, file_hash, listing_digest, require_dir
from xcnn.data.images import image_size, load_labels
from xcnn.data.paths import inside
from xcnn.errors import XcnnError

log = logging.getLogger(__name__)

# VOC class index (1..20) -> COCO category name.
VOC_CLASSES = (
    "airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "dining table", "dog", "horse", "motorcycle", "person", "potted plant", "sheep", "couch", "train", "tv",
)
VOID = 255
# Label images are decoded whole while the set is indexed, before any pixel budget is known;
# this bounds that (a VOC2012 mask is 0.2 megapixels).
_SCAN_LIMIT = 100_000_000
_HINT = "give data.root = a VOC2012-style folder (JPEGImages/, SegmentationObject/, SegmentationClass/, ImageSets/)"


class VocDataset(Dataset):
    def __init__(self, root: str | Path, split: str = "val") -> None:
        self.root = require_dir(Path(root), "VOC folder", _HINT)
        for sub in ("JPEGImages", "SegmentationObject", "SegmentationClass"):
            require_dir(self.root / sub, "VOC folder", f"{self.root} lacks it; {_HINT}")
        sets = self.root / "ImageSets" / "Segmentation"
        split_file = inside(self.root, f"ImageSets/Segmentation/{split}.txt", f"data.split {split!r}")
        if not split_file.is_file():
            have = sorted(p.stem for p in sets.glob("*.txt")) if sets.is_dir() else []
            raise XcnnError(f"VOC split file {split_file} not found; give data.split = one of {have or 'the splits you have'}")
        self.source = str(split_file)
        try:
            text = split_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise XcnnError(f"VOC split file {split_file} is not UTF-8 text ({err}); save it as UTF-8, "
                            "one image name per line") from None
        names = sorted({line.split()[0] for line in text.splitlines() if line.strip()})
        if not names:
            raise XcnnError(f"VOC split file {split_file} lists no image; put one image name per line")
        # name -> (photo, instance PNG, class PNG), each confined to the root
        self._paths: dict[str, tuple[Path, Path, Path]] = {}
        for name in names:
            what = f"image {name!r} in {split_file}"
            photo, *masks = (inside(self.root, f"{sub}/{name}.{ext}", what) for sub, ext in
                             (("JPEGImages", "jpg"), ("SegmentationObject", "png"), ("SegmentationClass", "png")))
            for mask in masks:  # a missing photo is skipped on selection; its masks are the annotation
                if not mask.is_file():
                    state = "is a folder, not a PNG file" if mask.is_dir() else "not found"
                    raise XcnnError(f"{what}: its mask {mask} {state}; add the mask or remove the line")
            self._paths[f"JPEGImages/{name}.jpg"] = (photo, masks[0], masks[1])

    @property
    def categories(self) -> list[str]:
        return list(VOC_CLASSES)

    def digest(self) -> str:
        return listing_digest("voc", [(image, file_hash(obj), file_hash(cls))
                                      for image, (_, obj, cls) in self._paths.items()])

    def mask(self, image_id: ImageId, category: str) -> np.ndarray:
        obj = _indices(self._paths[str(image_id)][1])
        wanted = self._index[str(image_id)][1].get(VOC_CLASSES.index(self.name(category)) + 1, [])
        return np.isin(obj, wanted)

    def _images(self, category: str) -> list[ImageId]:
        c = VOC_CLASSES.index(category) + 1
        return [image for image, (_, classes) in self._index.items() if c in classes]

    def _size(self, image_id: ImageId) -> tuple[int, int]:
        return self._index[str(image_id)][0]

    def _file(self, image_id: ImageId) -> Path:
        return self._paths[str(image_id)][0]

    def _size_source(self, image_id: ImageId) -> str:
        return f"its mask {self._paths[str(image_id)][1]}"

    @cached_property
    def _index(self) -> dict[str, tuple[tuple[int, int], dict[int, list[int]]]]:
        """Per photo: its size and, per VOC class, the instance indices of that class."""
        index = {}
        for image in self._paths:
            size = image_size(self._paths[image][1])
            if size[0] * size[1] > _SCAN_LIMIT:
                log.warning("leaving out %s: its mask is %d×%d pixels, over %d", image, size[1], size[0], _SCAN_LIMIT)
                continue
            obj, cls = self._labels(image)
            instances: dict[int, list[int]] = {}
            for k in np.unique(obj):
                if k == 0 or k == VOID:
                    continue
                under = cls[obj == k]
                under = under[(under >= 1) & (under <= len(VOC_CLASSES))]
                if under.size == 0:
                    log.debug("%s: instance %d lies on no class pixel; left out", image, k)
                    continue
                # majority class; a tie goes to the lower index, so the choice is reproducible
                c = int(np.bincount(under, minlength=len(VOC_CLASSES) + 1).argmax())
                instances.setdefault(c, []).append(int(k))
            index[image] = (obj.shape, instances)
        return index

    def _labels(self, image: str) -> tuple[np.ndarray, np.ndarray]:
        """The instance and class index images of a photo, checked to be of one size."""
        _, obj_png, cls_png = self._paths[image]
        obj, cls = _indices(obj_png), _indices(cls_png)
        if obj.shape != cls.shape:
            raise XcnnError(f"{obj_png} is {obj.shape[1]}×{obj.shape[0]} but {cls_png} is "
                            f"{cls.shape[1]}×{cls.shape[0]}; both masks of a photo must have its size")
        return obj, cls


def _indices(png: Path) -> np.ndarray:
    """A VOC label image's pixel indices (never its palette colours)."""
    labels, mode = load_labels(png, _SCAN_LIMIT)
    if mode not in ("P", "L"):
        raise XcnnError(f"{png} is a {mode} image, not an indexed PNG; VOC masks are palette PNGs "
                        "whose pixel values are instance or class indices")
    return labels
