"""The dataset formats a config may name, the paths each one takes, and opening one."""
from __future__ import annotations

from xcnn.data.dataset import Dataset
from xcnn.errors import XcnnError

# format -> its [data] keys, required first, each with what to give (for one-line messages)
FORMATS: dict[str, dict[str, str]] = {
    "coco": {
        "ann_file": "a COCO instances JSON file",
        "image_dir": "the folder of its photos",
    },
    "voc": {
        "root": "a VOC2012-style folder (JPEGImages/, SegmentationObject/, SegmentationClass/, ImageSets/Segmentation/)",
        "split": 'the split file\'s name under ImageSets/Segmentation/ (default "val")',
    },
    "imagenet-boxes": {
        "image_dir": "the folder of the photos",
        "box_dir": "the folder of one Pascal-VOC-style XML per photo",
    },
    "folder": {
        "root": "the folder holding masks.csv (columns image, mask, category)",
    },
}
OPTIONAL = {"split"}  # keys with a default
PATHS = {"ann_file", "image_dir", "root", "box_dir"}  # keys that are paths (taken from the config's folder)


def open_dataset(fmt: str, paths: dict[str, str]) -> Dataset:
    """The dataset of format `fmt` from its [data] keys (paths absolute, as the config resolved them)."""
    if fmt == "coco":
        from xcnn.data.coco import CocoDataset

        return CocoDataset(paths["ann_file"], paths["image_dir"])
    if fmt == "voc":
        from xcnn.data.voc import VocDataset

        return VocDataset(paths["root"], paths.get("split") or "val")
    if fmt == "imagenet-boxes":
        from xcnn.data.boxes import BoxDataset

        return BoxDataset(paths["image_dir"], paths["box_dir"])
    if fmt == "folder":
        from xcnn.data.folder import FolderDataset

        return FolderDataset(paths["root"])
    raise XcnnError(f"unknown data format {fmt!r}; use one of {', '.join(FORMATS)}")


def required(fmt: str) -> list[str]:
    return [k for k in FORMATS[fmt] if k not in OPTIONAL]


def needs(fmt: str) -> str:
    """What a format takes, in words: 'root = ... and split = ...'."""
    return "; ".join(f"{k} = {what}" for k, what in FORMATS[fmt].items())


class DataSource:
    """A dataset named by a config, opened on first use: a run checks its identity (the digest)
    and loads its models before it pays for reading a large annotation file."""

    def __init__(self, fmt: str, paths: dict[str, str]) -> None:
        self.format, self.paths = fmt, paths
        self._dataset: Dataset | None = None
        self._digest: str | None = None

    @property
    def where(self) -> str:
        """The dataset's main path, for messages."""
        return next(self.paths[k] for k in FORMATS[self.format] if k in self.paths)

    def open(self) -> Dataset:
        if self._dataset is None:
            self._dataset = open_dataset(self.format, self.paths)
        return self._dataset

    def digest(self) -> str:
        """`Dataset.digest()`; for COCO straight from the file, without loading it."""
        if self._digest is None:
            if self.format == "coco" and self._dataset is None:
                from xcnn.data.coco import coco_digest

                self._digest = coco_digest(self.paths["ann_file"])
            else:
                self._digest = self.open().digest()
        return self._digest
