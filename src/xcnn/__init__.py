"""xcnn: gradient saliency maps for CNN classifiers, scored against object masks."""
from __future__ import annotations

import importlib
from typing import Any

from xcnn.errors import XcnnError
from xcnn.methods.registry import Options
from xcnn.registry import DEFAULT_METHODS, CheckRow, MetricContext, Score, load_plugins, method, metric
from xcnn.registry import model_check as check

__all__ = ["ALL_METHODS", "DEFAULT_METHODS", "METHODS", "CheckContext", "CheckRow", "Context", "Explainer", "Maps",
           "MetricContext", "Options", "Score", "XcnnError", "check", "load_plugins", "method", "metric"]
__version__ = "0.2.0"


# Subpackages imported on first use, so `import xcnn; xcnn.models.load(...)` works without
# `import xcnn.models`, while `import xcnn` alone stays torch-free (the report runs without torch).
_SUBPACKAGES = ("data", "experiment", "metrics", "models", "report")


def __getattr__(name: str) -> Any:
    # The engine imports torch; layers that never touch it (metrics, report) stay light.
    if name in ("METHODS", "Explainer", "Maps"):
        from xcnn import engine

        return getattr(engine, name)
    if name == "Context":
        from xcnn.methods.context import Context

        return Context
    if name == "CheckContext":
        from xcnn.metrics.checks import CheckContext

        return CheckContext
    if name == "ALL_METHODS":  # every registered method, plugins' included: asked, not frozen at import
        from xcnn import registry

        return registry.method_names()
    if name in _SUBPACKAGES:
        return importlib.import_module(f"xcnn.{name}")  # also sets it on this module: asked once
    raise AttributeError(f"module 'xcnn' has no attribute {name!r}")
