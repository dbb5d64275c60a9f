"""The thesis's five method names and their words (kept for old imports; the registry,
``xcnn.methods.registry``, is the one source)."""
from __future__ import annotations

from xcnn.methods.registry import DEFAULT_METHODS, REGISTRY

METHODS: tuple[str, ...] = DEFAULT_METHODS
METHOD_LABELS: dict[str, str] = {name: m.label for name, m in REGISTRY.items()}
