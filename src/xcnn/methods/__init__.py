"""Saliency methods: one module per family, each method a function registered by ``@xcnn.method``,
and one Captum-style class per method.

``from xcnn.methods import registry`` never imports torch; the classes
(``GuidedBackprop(model).attribute(x, target=281)``, ``Attribution(model, "layercam")``) are
made from the registry on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from xcnn.methods.registry import DEFAULT_METHODS, Method, Options

__all__ = ["ALL_METHODS", "DEFAULT_METHODS", "REGISTRY", "SINGLE_PASS", "Method", "Options"]


def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(f"module 'xcnn.methods' has no attribute {name!r}")
    if name in ("ALL_METHODS", "REGISTRY", "SINGLE_PASS", "BASELINES", "BASELINE_NAMES"):
        return getattr(importlib.import_module("xcnn.methods.registry"), name)
    if name == "rise_masks":  # RISE's mask generator: rise_masks(n, cells, p, size, seed) -> N×1×H×W
        return importlib.import_module("xcnn.methods.rise").rise_masks
    classes = importlib.import_module("xcnn.methods.classes")
    if hasattr(classes, name):
        return getattr(classes, name)
    raise AttributeError(f"module 'xcnn.methods' has no attribute {name!r}")
