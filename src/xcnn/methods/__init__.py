"""Saliency methods: the registry (torch-free) and one Captum-style class per method.

``from xcnn.methods import registry`` never imports torch; the classes
(``GuidedBackprop(model).attribute(x, target=281)``, ``Attribution(model, "layercam")``) are
made from the registry on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from xcnn.methods.registry import ALL_METHODS, DEFAULT_METHODS, REGISTRY, SINGLE_PASS, Method, Options

__all__ = ["ALL_METHODS", "DEFAULT_METHODS", "REGISTRY", "SINGLE_PASS", "Method", "Options"]


def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(f"module 'xcnn.methods' has no attribute {name!r}")
    classes = importlib.import_module("xcnn.methods.classes")
    if hasattr(classes, name):
        return getattr(classes, name)
    raise AttributeError(f"module 'xcnn.methods' has no attribute {name!r}")
