"""The thesis's five method names (METHODS) and every method's label (METHOD_LABELS), kept for
old imports only: nothing in xcnn imports it; the registry, ``xcnn.methods.registry``, is the one source."""
from __future__ import annotations

from xcnn.methods.registry import DEFAULT_METHODS, REGISTRY

METHODS: tuple[str, ...] = DEFAULT_METHODS
METHOD_LABELS: dict[str, str] = {name: m.label for name, m in REGISTRY.items()}
