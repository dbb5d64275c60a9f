"""Ground truth: datasets (COCO, VOC, ImageNet boxes, plain folders), COCO->ImageNet classes, masks."""
from __future__ import annotations

import importlib
from typing import Any

from xcnn.data.boxes import BoxDataset
from xcnn.data.classes import imagenet_classes, imagenet_names, imagenet_wnids
from xcnn.data.coco import CocoDataset
from xcnn.data.dataset import Dataset, Sample
from xcnn.data.folder import FolderDataset
from xcnn.data.formats import FORMATS, open_dataset
from xcnn.data.images import DEFAULT_MAX_PIXELS, ImageTooLarge, load_image
from xcnn.data.masks import dilate, resize_mask
from xcnn.data.paths import inside
from xcnn.data.voc import VocDataset

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "BoxDataset",
    "CocoDataset",
    "Dataset",
    "FolderDataset",
    "ImageTooLarge",
    "Sample",
    "VocDataset",
    "dilate",
    "imagenet_classes",
    "imagenet_names",
    "imagenet_wnids",
    "inside",
    "load_image",
    "open_dataset",
    "resize_mask",
]


def __getattr__(name: str) -> Any:
    # `demo` is imported on first use only: building it may pull in heavier
    # dependencies, and `from xcnn.data import demo` needs nothing here to work.
    if name == "demo":
        return importlib.import_module("xcnn.data.demo")
    raise AttributeError(f"module 'xcnn.data' has no attribute {name!r}")
