"""The methods and per-map metrics of a run as its RUN_DIR/config.json describes them (the key
"registry": labels, kinds, papers, score directions, record fields), for what reads a run folder
without running anything: the exports and the report. Plugin methods and metrics exist only in
the process that ran them, and the registry's tables import torch, so their words come from the
run, never from the registry.

Runs of xcnn 0.2 and before have no "registry" key: their methods are 0.2's built-ins, described
by the snapshot ``builtin_registry.json`` beside this module (a test keeps it equal to the live
registry). Torch-free and NumPy-free.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from xcnn.errors import XcnnError
from xcnn.runfolder.layout import CONFIG_FILE

SNAPSHOT = Path(__file__).with_name("builtin_registry.json")
# The per-map metrics of the thesis and of 0.2: the report shows them in columns of their own,
# and a column "Mean <label>" only for the others.
BUILTIN_METRICS = ("P", "chance", "lift", "pointing_hit", "rma")


@dataclass(frozen=True)
class MethodInfo:
    name: str
    label: str
    kind: str = "signed"  # "signed" or "heat"
    draw: str = "grey"  # how its pictures are drawn: "grey" or "heat"
    reference: str = ""
    baseline: bool = False
    fields: tuple[str, ...] = ()  # per-image numbers of its records (integrated_gradients: completeness)
    origin: str = ""  # the module that registered it
    known: bool = True  # False: named by records only, its words made from its name


@dataclass(frozen=True)
class MetricInfo:
    name: str  # the record field it fills
    label: str
    higher_is_better: bool | None = True  # None: a description, not a score
    category: str = ""
    paper: str = ""
    fields: tuple[str, ...] = ()  # record fields it fills besides its name (P: E, E_celk)
    origin: str = ""

    @property
    def builtin(self) -> bool:
        return self.name in BUILTIN_METRICS

    @property
    def arrow(self) -> str:
        """↑ higher is better, ↓ lower is better, nothing for a description."""
        if self.higher_is_better is None:
            return ""
        return "↑" if self.higher_is_better else "↓"


@dataclass(frozen=True)
class ScoreInfo:
    """A model check's summary number (xcnn.registry.Score): the mean of its rows per method."""

    test: str
    measure: str
    label: str
    higher_is_better: bool | None = True
    last_step: bool = False


@dataclass(frozen=True)
class CheckInfo:
    name: str
    label: str
    category: str = ""
    paper: str = ""
    scope: str = "maps"
    scores: tuple[ScoreInfo, ...] = ()
    origin: str = ""


@dataclass(frozen=True)
class Described:
    """A run's methods (in registry order: methods, then baselines), metrics and model checks."""

    methods: Mapping[str, MethodInfo] = field(default_factory=dict)
    metrics: Mapping[str, MetricInfo] = field(default_factory=dict)
    checks: Mapping[str, CheckInfo] = field(default_factory=dict)

    def scores(self) -> list[ScoreInfo]:
        """Every check's summary numbers, in registry order."""
        return [s for c in self.checks.values() for s in c.scores]

    def method(self, name: str) -> MethodInfo:
        """The description of ``name``; one made from the name when the run does not describe it."""
        known = self.methods.get(name)
        if known is not None:
            return known
        return MethodInfo(name, str(name).replace("_", " ").capitalize(), known=False)

    def label(self, name: str) -> str:
        return self.method(name).label

    def is_baseline(self, name: str) -> bool:
        return self.method(name).baseline

    @property
    def baselines(self) -> tuple[str, ...]:
        return tuple(n for n, m in self.methods.items() if m.baseline)

    @cached_property
    def _position(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.methods)}

    def rank(self, name: str) -> tuple[int, int, str]:
        """Sort key: described methods, then described baselines, then unknown names by name."""
        if name not in self.methods:
            return (2, 0, str(name))
        return (1 if self.methods[name].baseline else 0, self._position[name], name)

    def order(self, names: Iterable[str]) -> list[str]:
        return sorted(set(names), key=self.rank)

    def plugin_metrics(self) -> list[MetricInfo]:
        """The metrics beyond the five of 0.2, in registry order: each gets a report column."""
        return [m for m in self.metrics.values() if not m.builtin]

    def record_fields(self) -> tuple[str, ...]:
        """The record fields the metrics and methods fill, in registry order, each once."""
        names = [f for m in self.metrics.values() for f in (m.name, *m.fields)]
        names += [f for m in self.methods.values() for f in m.fields]
        return tuple(dict.fromkeys(names))


@lru_cache(maxsize=1)
def builtin() -> Described:
    """0.2's built-in methods, baselines and metrics (runs without a "registry" key)."""
    return parse(json.loads(SNAPSHOT.read_text(encoding="utf-8")), f"{SNAPSHOT}: 'registry", ranked=False)


def of_run(run_dir: str | Path) -> Described:
    """The descriptions RUN_DIR/config.json holds; the snapshot of 0.2 when it holds none (or
    cannot be read: the report says so where it reads the file). A "registry" of the wrong shape
    is one line naming the key."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return builtin()
    registry = body.get("registry") if isinstance(body, dict) else None
    if registry is None:
        return builtin()
    return parse(registry, f"{path}: 'registry", ranked=True)


def parse(registry: Any, where: str, ranked: bool) -> Described:
    """Descriptions from the "registry" object. Its "methods" come in registry order, or in the
    order of its list "order" when given; without one (config.json is written with sorted keys)
    0.2's built-ins keep their order and the others follow as listed (``ranked``)."""
    def bad(key: str, what: str) -> XcnnError:
        return XcnnError(f"{where}{key}' is not {what}; the file was edited or damaged - restore it, or rerun "
                         "'xcnn run' into a new folder")

    if not isinstance(registry, dict):
        raise bad("", "an object")
    tables = {}
    for part in ("methods", "metrics"):
        table = registry.get(part, {})
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            raise bad(f".{part}", "an object of objects")
        tables[part] = table
    methods = {name: MethodInfo(name, **_fields(entry, _METHOD_KEYS, bad, f".methods.{name}"))
               for name, entry in tables["methods"].items()}
    metrics = {name: MetricInfo(name, **_fields(entry, _METRIC_KEYS, bad, f".metrics.{name}"))
               for name, entry in tables["metrics"].items()}
    order, metric_order = _order(registry, "order", bad), _order(registry, "metric_order", bad)
    if order is not None:
        names = _sorted_by(methods, order)
    elif ranked:
        old = list(builtin().methods)
        names = sorted(methods, key=lambda n: old.index(n) if n in old else len(old))
    else:
        names = list(methods)
    metric_names = list(metrics) if metric_order is None else _sorted_by(metrics, metric_order)
    return Described({n: methods[n] for n in names}, {n: metrics[n] for n in metric_names},
                     _checks(registry, bad))


def _checks(registry: dict[str, Any], bad: Any) -> dict[str, CheckInfo]:
    """The "checks" object (absent before checks were registered: 0.2's three, from the snapshot)."""
    table = registry.get("checks")
    if table is None:
        return dict(builtin().checks)
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise bad(".checks", "an object of objects")
    out = {}
    for name, entry in table.items():
        scores = entry.get("scores", [])
        if not isinstance(scores, list) or not all(isinstance(x, dict) and _text(x.get("test"))
                                                   and _text(x.get("measure")) and _text(x.get("label"))
                                                   for x in scores):
            raise bad(f".checks.{name}.scores", "a list of objects with test, measure and label")
        out[name] = CheckInfo(
            name, **_fields({k: v for k, v in entry.items() if k != "scores"}, _CHECK_KEYS, bad, f".checks.{name}"),
            scores=tuple(ScoreInfo(str(x["test"]), str(x["measure"]), str(x["label"]),
                                   x.get("higher_is_better") if isinstance(x.get("higher_is_better"), bool) else None,
                                   bool(x.get("last_step", False))) for x in scores))
    order = _order(registry, "check_order", bad)
    return out if order is None else {n: out[n] for n in _sorted_by(out, order)}


def _order(registry: dict[str, Any], key: str, bad: Any) -> list[str] | None:
    """A list of names in registry order (config.json sorts its keys, so the run keeps it apart)."""
    order = registry.get(key)
    if order is not None and not (isinstance(order, list) and all(isinstance(n, str) for n in order)):
        raise bad(f".{key}", "a list of names")
    return order


def _sorted_by(names: Iterable[str], order: list[str]) -> list[str]:
    first = {n: i for i, n in enumerate(dict.fromkeys(order))}
    return sorted(names, key=lambda n: first.get(n, len(first)))


def _text(v: Any) -> bool:
    return isinstance(v, str)


def _flag(v: Any) -> bool:
    return isinstance(v, bool)


def _texts(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


# key: (test, what it must be, default); "label" has no default: every entry names itself.
_METHOD_KEYS: dict[str, tuple[Any, str, Any]] = {
    "label": (_text, "a text", None), "kind": (lambda v: v in ("signed", "heat"), '"signed" or "heat"', "signed"),
    "draw": (lambda v: v in ("grey", "heat"), '"grey" or "heat"', None), "reference": (_text, "a text", ""),
    "baseline": (_flag, "true or false", False), "fields": (_texts, "a list of texts", []),
    "origin": (_text, "a text", ""),
}
_METRIC_KEYS: dict[str, tuple[Any, str, Any]] = {
    "label": (_text, "a text", None), "higher_is_better": (lambda v: v is None or _flag(v), "true, false or null", True),
    "category": (_text, "a text", ""), "paper": (_text, "a text", ""), "fields": (_texts, "a list of texts", []),
    "origin": (_text, "a text", ""),
}


_CHECK_KEYS: dict[str, tuple[Any, str, Any]] = {
    "label": (_text, "a text", None), "category": (_text, "a text", ""), "paper": (_text, "a text", ""),
    "scope": (lambda v: v in ("maps", "photos"), '"maps" or "photos"', "maps"), "origin": (_text, "a text", ""),
}


def _fields(entry: dict[str, Any], keys: dict[str, tuple[Any, str, Any]], bad: Any, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (ok, what, default) in keys.items():
        if key not in entry or (entry[key] is None and key != "higher_is_better"):
            if key == "label":
                raise bad(f"{where}.label", "a text")
            out[key] = default
        elif not ok(entry[key]):
            raise bad(f"{where}.{key}", what)
        else:
            out[key] = entry[key]
    if out.get("draw") is None and "draw" in keys:  # older descriptions: the kind says it
        out["draw"] = "heat" if out["kind"] == "heat" else "grey"
    if "fields" in out:
        out["fields"] = tuple(out["fields"])
    return out
