"""The experiment: config, planner, worker, the store (single writer), backends, exports."""
from __future__ import annotations

from typing import Any

from xcnn.experiment.config import Config, ModelSpec, Size, load_config
from xcnn.experiment.export import read_records, write_exports

__all__ = ["Config", "ModelSpec", "Size", "Summary", "load_config", "load_maps", "read_records", "run", "write_exports"]


def __getattr__(name: str) -> Any:
    # The runner imports torch; the report reads records through this package and stays light.
    if name in ("Summary", "run"):
        from xcnn.experiment import runner

        return getattr(runner, name)
    if name == "load_maps":
        from xcnn.experiment import pictures

        return pictures.load_maps
    raise AttributeError(f"module 'xcnn.experiment' has no attribute {name!r}")
