"""Ground truth: COCO-format datasets, COCO->ImageNet classes, masks."""
from __future__ import annotations

import importlib
from typing import Any

from xcnn.data.classes import imagenet_classes, imagenet_names
from xcnn.data.coco import CocoDataset, Sample
from xcnn.data.images import load_image
from xcnn.data.masks import dilate, resize_mask

__all__ = [
    "CocoDataset",
    "Sample",
    "load_image",
    "dilate",
    "resize_mask",
    "imagenet_classes",
    "imagenet_names",
]


def __getattr__(name: str) -> Any:
    # `demo` is imported on first use only: building it may pull in heavier
    # dependencies, and `from xcnn.data import demo` needs nothing here to work.
    if name == "demo":
        return importlib.import_module("xcnn.data.demo")
    raise AttributeError(f"module 'xcnn.data' has no attribute {name!r}")
