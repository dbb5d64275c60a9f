"""Backends run the planned batches on Workers and hand every result to the store.

A backend is a module with ``execute`` (the ``Backend`` protocol); ``BACKENDS`` names them as
``run.backend`` does. Neither the worker nor the store knows which backend runs it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from xcnn.experiment.config import Config
    from xcnn.experiment.plan import Batch
    from xcnn.experiment.progress import Progress
    from xcnn.experiment.store import RunStore


class Backend(Protocol):
    def execute(self, config: Config, batches: list[Batch], store: RunStore, progress: Progress, *,
                device: Any, save_maps: bool) -> None:
        """Run ``batches``, hand each one's results to ``progress.store``; ``device``: a torch
        device where the backend runs workers in this process, else None."""


def _local() -> Backend:
    from xcnn.experiment.backends import local

    return local


def _ray() -> Backend:
    # imported only when asked for: Ray is an optional extra
    from xcnn.experiment.backends import ray

    return ray


BACKENDS: dict[str, Callable[[], Backend]] = {"local": _local, "ray": _ray}
