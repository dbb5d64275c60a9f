"""Measurements on saliency maps; pure, batched functions with documented known answers.

- ``localisation`` (re-exported here): energy concentration P = E / E_celk, chance level,
  pointing game, relevance mass accuracy, and ``scores`` (all of them for the same maps).
- ``baselines``: model-free maps (uniform, centre, edges), scored exactly like methods.
- ``faithfulness``: deletion and insertion curves and their areas (Petsiuk et al. 2018).
- ``road``, ``correlation``, ``confidence`` and ``robustness``: the model checks after Quantus 0.6.0
  (ROAD, Faithfulness Correlation, Average Drop, Max/Avg-Sensitivity, Local Lipschitz), on the
  ``Batch`` and ``forward`` of ``forward``.
- ``sanity``: map similarity (Spearman, SSIM), cascading model randomisation, and the helpers
  of the input- and class-dependence checks (Adebayo et al. 2018).

``from xcnn import metrics`` imports neither torch nor the submodules; ``metrics.sanity`` and
the others load on first access.
"""
from __future__ import annotations

import importlib
from typing import Any

from xcnn.metrics.localisation import (
    ArrayLike,
    chance_level,
    concentration,
    energy,
    pointing_game,
    relevance_mass_accuracy,
    scores,
)

# The private helpers stay importable from here, as they were from the old single module.
from xcnn.metrics.localisation import _as_numpy as _as_numpy
from xcnn.metrics.localisation import _check as _check
from xcnn.metrics.localisation import _ratio as _ratio

__all__ = [
    "ArrayLike",
    "chance_level",
    "concentration",
    "energy",
    "pointing_game",
    "relevance_mass_accuracy",
    "scores",
]
_SUBMODULES = ("localisation", "baselines", "faithfulness", "sanity", "road", "correlation", "confidence", "robustness",
               "forward")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"xcnn.metrics.{name}")
    raise AttributeError(f"module 'xcnn.metrics' has no attribute {name!r}")
