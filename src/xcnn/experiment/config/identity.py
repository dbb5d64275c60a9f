"""A run's *identity*: what its records depend on (the data's content, each model's weights,
layer and the input statistics, classes and reshape it sets, growth, method parameters, the
record schema, data.targets when not "imagenet", run.max_target_rank when set, a metric's changed
parameters). RUN_DIR keeps it and refuses a config that changes it. What only says which records
are wanted (categories, photos per category, models, sizes, methods) may grow: a rerun computes
only what is missing. The checks are not part of the identity either: their rows
(RUN_DIR/checks.jsonl) carry their own parameters."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xcnn.data.dataset import file_hash

if TYPE_CHECKING:
    from xcnn.experiment.config.load import Config
    from xcnn.experiment.config.models import ModelSpec

from xcnn.runfolder.records import RECORD_SCHEMA as RECORD_SCHEMA  # one number, kept with the record schema


def identity(config: Config, data_digest: str) -> dict[str, Any]:
    """What the records of ``config`` depend on; ``data_digest`` is the hash of the dataset's content.
    An optional key is absent at its default, so older runs keep their identity."""
    out = {
        "schema": RECORD_SCHEMA,
        "data": data_digest,
        "growth": config.run.growth,
        "methods": config.params_identity(),
        "models": {m.name: _model_identity(m) for m in config.models},
    }
    changed = {name: asdict(p) for name, p in config.metrics.params if p != type(p)()}
    if changed:
        out["metrics"] = changed
    if config.run.max_target_rank is not None:
        out["max_target_rank"] = config.run.max_target_rank
    data = config.data
    if data.targets != "imagenet":
        out["targets"] = data.targets if data.targets == "label" else [[c, list(v)] for c, v in data.target_map]
    return out


def compare_identity(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two identities, in words; models only where both have the name
    (adding a model to a run is fine, changing one is not)."""
    stored = migrate_identity(stored)
    changed = [k for k in ("schema", "data", "growth") if stored.get(k) != current.get(k)]
    before = stored.get("methods", {}) if isinstance(stored.get("methods"), dict) else {}
    changed += [f"parameters of {name}" for name, params in current.get("methods", {}).items()
                if name in before and before[name] != params]
    if stored.get("targets", "imagenet") != current.get("targets", "imagenet"):
        changed.append("targets")
    # a metric's parameters: records keep the values they were scored with, so changing them is
    # another run (adding or turning off a metric is not)
    before_metrics, now_metrics = stored.get("metrics", {}) or {}, current.get("metrics", {}) or {}
    changed += [f"parameters of metric {name}" for name in sorted(set(before_metrics) | set(now_metrics))
                if before_metrics.get(name) != now_metrics.get(name)]
    # which units have records at all: absent (an older run, or no filter) is None
    if stored.get("max_target_rank") != current.get("max_target_rank"):
        changed.append("max_target_rank")
    models = stored.get("models", {}) if isinstance(stored.get("models"), dict) else {}
    changed += [f"model {name}" for name, spec in current["models"].items() if name in models and models[name] != spec]
    return changed


def migrate_identity(stored: dict[str, Any]) -> dict[str, Any]:
    """An identity written by xcnn 0.2 (one "options" bag of every method's parameters) in
    today's form ("methods": each method's own), so a 0.2 run folder resumes."""
    old = stored.get("options")
    if not isinstance(old, dict) or "methods" in stored:
        return stored
    out = {k: v for k, v in stored.items() if k != "options"}
    out["methods"] = {
        "scorecam": {"top_k": old.get("scorecam_top_k")},
        "integrated_gradients": {"steps": old.get("ig_steps")},
        "smoothgrad": {"samples": old.get("smoothgrad_samples"), "sigma": old.get("smoothgrad_sigma"),
                       "seed": old.get("seed")},
    }
    return out


def _model_identity(m: ModelSpec) -> dict[str, Any]:
    """A model's entry of the identity; the optional keys only when set, so the identity of a
    config without them stays what it was."""
    out: dict[str, Any] = {"gradcam_layer": m.gradcam_layer, "weights": _weights_identity(m.weights)}
    for key in ("mean", "std", "classes"):
        if getattr(m, key) is not None:
            out[key] = list(getattr(m, key))
    if m.layout is not None:
        out["reshape"] = m.layout
    return out


def _weights_identity(weights: str | None) -> str:
    """The published weights, "random", or the content hash of a weights file (so a moved
    file resumes and a replaced one does not)."""
    if weights is None or weights == "random":
        return weights or "published"
    return "sha256:" + file_hash(Path(weights))
