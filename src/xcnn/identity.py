"""What a model check's parameters make of its rows' identity; torch-free and dependency-free, so
the registry and the exports (which never import the registry) share it."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any


def identity_of_values(values: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """``check_identity`` of parameters given as a dict (as config.json keeps them)."""
    values = dict(values)
    steps = values.pop("steps", None)
    values.pop("photos", None)
    if not values:
        return steps, None
    text = repr(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in values.items()))
    return steps, hashlib.sha256(text.encode()).hexdigest()[:12]
