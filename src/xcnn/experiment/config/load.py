"""The whole config: one table dataclass per TOML table, read and checked before any work."""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xcnn.errors import XcnnError
from xcnn.experiment.config import identity as _identity
from xcnn.experiment.config._read import Source, known, table_of, toml_keys
from xcnn.experiment.config.checks import Checks
from xcnn.experiment.config.data import DataConfig
from xcnn.experiment.config.methods import MethodsConfig, MetricsConfig, read_plugins
from xcnn.experiment.config.models import ModelSpec, read_models
from xcnn.experiment.config.run import RunConfig, Size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


@dataclass(frozen=True)
class Config:
    """A config file, table by table (docs/CONFIG.md lists every key with its default)."""

    data: DataConfig
    models: tuple[ModelSpec, ...]
    run: RunConfig = RunConfig()
    methods: MethodsConfig = MethodsConfig()
    metrics: MetricsConfig = MetricsConfig()
    checks: Checks = Checks()  # never part of the identity
    plugins: tuple[tuple[str, str], ...] = ()  # (module, sha256 of its source): for information only
    source: str = field(default="", compare=False)  # the TOML file it came from

    def to_dict(self) -> dict[str, Any]:
        """The config as RUN_DIR/config.json keeps it: 0.2's flat keys (the report and the exports
        read them), the checks with every one turned on and its parameters."""
        data, run = asdict(self.data), asdict(self.run)
        models = [{**asdict(m), "reshape": m.layout} for m in self.models]
        for m in models:
            del m["layout"]
        backend = {k: run.pop(k) for k in ("backend", "address", "ship_photos")}
        # 0.2's order: the report shows it as written
        d: dict[str, Any] = {"categories": data.pop("categories"), "models": models, **data, **run,
                             "sizes": [s.label for s in self.run.sizes]}
        d.update(params=asdict(self.methods)["params"], metrics_off=self.metrics.off,
                 metric_params=asdict(self.metrics)["params"], plugins=self.plugins)
        d["checks"] = {**asdict(self.checks), "faithfulness_sizes": list(self.checks.faithfulness_sizes),
                       # every check turned on with its parameters, built-ins included: what the
                       # exports pick the current settings' rows by (they never import the registry)
                       "enabled": [[name, None if p is None else asdict(p)] for name, p in self.checks.enabled()]}
        return {**d, **backend}

    def method_params(self) -> dict[str, Any]:
        """Every method's parameters (the registry's defaults where the config sets none)."""
        return self.methods.method_params()

    def params_identity(self) -> dict[str, Any]:
        """The parameters of the built-in methods and of the asked ones: what maps depend on."""
        return self.methods.params_identity(self.run.methods)

    def faithfulness_sizes(self) -> tuple[Size, ...]:
        """The run sizes whose method records get the "maps"-scope checks' rows."""
        return self.checks.faithfulness_run_sizes(self.run.sizes)

    def check_size(self) -> Size | None:
        """The size of the randomisation and dependence checks: the first non-original one."""
        return self.run.check_size()

    def identity(self, data_digest: str) -> dict[str, Any]:
        """What the records depend on; ``data_digest`` is the hash of the dataset's content."""
        return _identity.identity(self, data_digest)


TABLES = {"data": DataConfig, "models": ModelSpec, "run": RunConfig, "checks": Checks,
          "methods": MethodsConfig, "metrics": MetricsConfig}  # every table, by its TOML name
TOP_KEYS = {"plugins"}  # top-level keys that are not tables


def load_config(path: str | Path) -> Config:
    """Read and check a config file; any problem is one XcnnError line naming the key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise XcnnError(f"{path}: config file not found; give the path of a .toml file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise XcnnError(f"{path}: cannot read config ({err})") from None
    except tomllib.TOMLDecodeError as err:
        raise XcnnError(f"{path}: not valid TOML ({err}); fix the syntax") from None
    return parse_config(raw, path)


def parse_config(raw: dict[str, Any], path: Path) -> Config:
    """A parsed TOML document as a Config, each table checked by its own dataclass."""
    src = Source(path)
    for key in raw:
        if key not in TABLES and key not in TOP_KEYS:
            raise src.fail(key, f"unknown section; known: {', '.join(sorted(set(TABLES) | TOP_KEYS))}")
    plugins = read_plugins(raw.get("plugins", []), src)  # first: they add methods and metrics
    data = table_of(raw.get("data", {}), "data", src)
    run = table_of(raw.get("run", {}), "run", src)
    known(data, set(toml_keys(DataConfig)), "data", src)
    known(run, RunConfig.keys(), "run", src)
    data_config = DataConfig.from_toml(data, src)
    models = read_models(raw.get("models"), src)
    run_config = RunConfig.from_toml(run, src)
    return Config(
        data=data_config, models=models, run=run_config,
        methods=MethodsConfig.from_toml(raw.get("methods", {}), run_config.options, src),
        metrics=MetricsConfig.from_toml(raw.get("metrics", {}), src),
        checks=Checks.from_toml(raw["checks"], run_config.sizes, src) if "checks" in raw else Checks(),
        plugins=plugins, source=str(path))
