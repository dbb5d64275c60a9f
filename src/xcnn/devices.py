"""The device names a config or a command line may give: one pattern, checked in one place."""
from __future__ import annotations

import re

from xcnn.errors import XcnnError

DEVICE_HINT = '"cpu", "cuda", "cuda:N", "mps" or "auto"'


def check_device(name: object) -> str:
    """``name`` if it is "cpu", "auto", "cuda", "cuda:N" or "mps" (whether it exists here is the
    runner's question, asked when the run starts); one line if not."""
    if not isinstance(name, str) or not re.fullmatch(r"cpu|auto|cuda(:\d+)?|mps", name):
        raise XcnnError(f"device {name!r}: use {DEVICE_HINT}")
    return name
