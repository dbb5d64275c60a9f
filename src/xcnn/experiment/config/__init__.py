"""The experiment's TOML config: parsed, checked as a whole before any work, hashed.

One frozen dataclass per TOML table, each reading and checking its own table once
(``from_toml``), composed into ``Config``:

- ``[data]`` DataConfig (data.py): the photos, their categories and target classes;
- ``[[models]]`` ModelSpec (models.py);
- ``[run]`` RunConfig (run.py): sizes, methods, growth, device, batches, the backend;
- ``[methods.NAME]`` MethodsConfig, ``[metrics]`` MetricsConfig, ``plugins`` (methods.py);
- ``[checks]`` Checks (checks.py).

docs/CONFIG.md lists every key with its default (tests/test_config_doc.py checks it against these
dataclasses); ``configs/demo.toml`` is a commented example. Relative paths are taken from the
config file's folder. What a run's records depend on (its identity, identity.py) is kept in
RUN_DIR, which refuses a config that changes it.
"""
from __future__ import annotations

from xcnn.experiment.config.checks import DEFAULT_CHECK_PHOTOS, Checks
from xcnn.experiment.config.data import DataConfig
from xcnn.experiment.config.identity import RECORD_SCHEMA, compare_identity, migrate_identity
from xcnn.experiment.config.load import TABLES, TOP_KEYS, Config, load_config, parse_config
from xcnn.experiment.config.methods import MethodsConfig, MetricsConfig
from xcnn.experiment.config.models import ModelSpec
from xcnn.experiment.config.run import OPTION_KEYS, RunConfig, Size, parse_size

__all__ = ["DEFAULT_CHECK_PHOTOS", "OPTION_KEYS", "RECORD_SCHEMA", "TABLES", "TOP_KEYS", "Checks", "Config",
           "DataConfig", "MethodsConfig", "MetricsConfig", "ModelSpec", "RunConfig", "Size", "compare_identity",
           "load_config", "migrate_identity", "parse_config", "parse_size"]
