"""The method names and their words, in the fixed order every table and figure uses.

Kept apart from the engine so that layers which never touch torch (config, report) can share them.
"""
from __future__ import annotations

METHODS: tuple[str, ...] = ("gradient", "deconvnet", "guided_backprop", "gradcam", "guided_gradcam")
METHOD_LABELS: dict[str, str] = {
    "gradient": "Gradient",
    "deconvnet": "Deconvnet",
    "guided_backprop": "Guided Backprop",
    "gradcam": "Grad-CAM",
    "guided_gradcam": "Guided Grad-CAM",
}
