"""The experiment: config, runner, crash-safe record store, exports (exp.json, records.csv)."""
from xcnn.experiment.config import Config, ModelSpec, Size, load_config
from xcnn.experiment.export import read_records, write_exports
from xcnn.experiment.runner import Summary, load_maps, run

__all__ = ["Config", "ModelSpec", "Size", "Summary", "load_config", "load_maps", "read_records", "run", "write_exports"]
