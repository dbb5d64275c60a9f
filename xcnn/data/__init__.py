"""Ground truth: COCO-format datasets, COCO->ImageNet classes, masks."""
from __future__ import annotations

import importlib
from typing import Any

from xcnn.data.classes import imagenet_classes, imagenet_names
from xcnn.data.coco import CocoDataset, Sample
from xcnn.data.images import DEFAULT_MAX_PIXELS, ImageTooLarge, load_image
from xcnn.data.masks import dilate, resize_mask
from xcnn.data.paths import inside

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "CocoDataset",
    "ImageTooLarge",
    "Sample",
    "dilate",
    "imagenet_classes",
    "imagenet_names",
    "inside",
    "load_image",
    "resize_mask",
]


def __getattr__(name: str) -> Any:
    # `demo` is imported on first use only: building it may pull in heavier
    # dependencies, and `from xcnn.data import demo` needs nothing here to work.
    if name == "demo":
        return importlib.import_module("xcnn.data.demo")
    raise AttributeError(f"module 'xcnn.data' has no attribute {name!r}")
