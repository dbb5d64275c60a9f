"""What a caller may set of a model beyond its name and weights (``xcnn.models.load``'s keywords,
a ``[[models]]`` table's keys), each checked in one place."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, TypeGuard

from xcnn.errors import XcnnError
from xcnn.layouts import check_layout


class OptionsDict(TypedDict, total=False):
    """``load``'s keyword arguments, as ``ModelOptions`` takes them."""

    mean: Sequence[float] | None
    std: Sequence[float] | None
    classes: Sequence[str] | str | Path | None
    layout: str | None


@dataclass(frozen=True)
class ModelOptions:
    """``mean``, ``std`` (three finite numbers, a std > 0), ``classes`` (names, or a file with one
    name per line) and ``layout`` ("tokens", "nhwc", "nchw"), each None for the model's own;
    checked on construction, so a model is never loaded with a value that would give NaN logits."""

    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    classes: Sequence[str] | str | Path | None = None
    layout: str | None = None

    def __post_init__(self) -> None:
        for key in ("mean", "std"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, input_statistics(getattr(self, key), key))
        if self.layout is not None:
            check_layout(self.layout)


def input_statistics(values: object, key: str) -> tuple[float, float, float]:
    """``mean`` or ``std`` as three floats; one line if they are not three finite numbers (a std
    also > 0). The one check for the config and for Python callers: a NaN mean or an infinite
    std would otherwise give NaN logits or a blank channel, and records that look valid."""
    items = list(values) if isinstance(values, (list, tuple)) else [values]
    good = [float(v) for v in items if _finite(v)]
    good = [v for v in good if key != "std" or v > 0]
    if not isinstance(values, (list, tuple)) or len(items) != 3 or len(good) != 3:
        shown = "[" + ", ".join(map(_number, items)) + "]" if isinstance(values, (list, tuple)) else repr(values)
        raise XcnnError(f"{key} {shown} must be three finite numbers (R, G, B){', each > 0' if key == 'std' else ''}")
    return good[0], good[1], good[2]


def _finite(v: object) -> TypeGuard[float | int]:
    if isinstance(v, bool):
        return False
    # a Python int may be too large for a float: compared, not converted
    return (isinstance(v, float) and math.isfinite(v)) or (isinstance(v, int) and abs(v) < 1e300)


def _number(v: object) -> str:
    # 0 and 0.0 read the same, as they do in TOML
    return f"{v:g}" if isinstance(v, float) else repr(v)
