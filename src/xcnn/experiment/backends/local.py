"""Plan -> worker -> store in one process."""
from __future__ import annotations

from typing import Any

from xcnn.experiment.config import Config
from xcnn.experiment.plan import Batch
from xcnn.experiment.progress import Progress
from xcnn.experiment.store import RunStore
from xcnn.experiment.worker import Worker


def execute(config: Config, batches: list[Batch], store: RunStore, progress: Progress, *,
            device: Any, save_maps: bool) -> None:
    worker = Worker(config, device, save_maps)
    try:
        for batch in batches:
            store.mark(batch.keys(), "start")  # durable before the work, so a kill is counted
            progress.store(store, batch, worker.run(batch))
    finally:
        worker.close()
