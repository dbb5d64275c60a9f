"""How a CAM layer's output reads as a B×C×h×w map: the one list of layouts.

The config calls it ``reshape`` (``[[models]] reshape = "tokens"``), the code ``layout``; both
mean one of these. "nchw" is the map as it is (stored as None), "tokens" a ViT's B×N×C, "nhwc"
a Swin stage's B×h×w×C.
"""
from __future__ import annotations

from xcnn.errors import XcnnError

LAYOUTS = ("tokens", "nhwc", "nchw")


def check_layout(value: object, what: str = "reshape") -> str:
    """``value`` if it names a layout; one line (naming ``what`` it was given as) if not."""
    if not isinstance(value, str) or value not in LAYOUTS:
        raise XcnnError(f"{what} {value!r} is not one of {', '.join(map(repr, LAYOUTS))}")
    return value
