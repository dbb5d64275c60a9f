"""The public registries: saliency methods, per-map metrics and model checks, each registered by a
decorator, and the plugins that add their own.

    @xcnn.method("twice_gradient", label="Twice the gradient", kind="signed", rules=("gradient",))
    def twice_gradient(ctx: xcnn.Context) -> torch.Tensor:
        return 2 * ctx.grads["gradient"]

    @xcnn.metric("total_energy", label="Total energy", higher_is_better=None)
    def total_energy(maps, masks, ctx):          # B×C×H×W, B×H×W -> B values
        return (maps ** 2).sum(axis=(1, 2, 3))

The built-in methods and metrics use the same decorators (xcnn.methods.*, xcnn.metrics.*); their
modules are imported on the first question asked of a table, so this module itself imports
neither torch nor NumPy. A plugin is a module that registers methods or metrics on import: a
config's ``plugins = ["mymethods"]``, ``xcnn explain --plugin mymethods`` or an installed
package's entry point in the group ``xcnn.plugins`` (docs/PLUGINS.md).

A method's parameters are a frozen dataclass with defaults (``params=``). From it come the
``[methods.NAME]`` table of a config, the ``xcnn explain`` options, the validation (the
dataclass's ``__post_init__`` raises ``ValueError``) and the run's identity.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from xcnn.errors import XcnnError, did_you_mean
from xcnn.identity import identity_of_values

log = logging.getLogger(__name__)

Kind = Literal["signed", "heat"]  # signed: B×3×H×W with sign; heat: B×1×H×W in [0, 1]
Rule = Literal["gradient", "deconvnet", "guided"]
RULES: tuple[Rule, ...] = ("gradient", "deconvnet", "guided")
ENTRY_POINTS = "xcnn.plugins"

DEFAULT_METHODS: tuple[str, ...] = ("gradient", "deconvnet", "guided_backprop", "gradcam", "guided_gradcam")  # the thesis's five

# The packages whose modules register the built-in entries: every module in them is imported on
# the first question asked of a table, so a new built-in method or metric is one new module.
BUILTIN_PACKAGES = ("xcnn.methods", "xcnn.metrics")


@dataclass(frozen=True)
class Method:
    """A saliency method (or a model-free baseline) as the registry knows it."""

    name: str  # registry name: configs, records, Maps, CLI
    label: str  # words in tables and figures
    kind: Kind
    fn: Callable[..., Any] = dataclasses.field(repr=False, compare=False, default=lambda ctx: None)
    rules: tuple[Rule, ...] = ()  # backward rules of the engine's shared pass that it reads
    needs_layer: bool = False  # reads the CAM layer's activations (and their gradient)
    extra_passes: bool = False  # costs passes of its own (batched, chunked to a memory budget)
    params: type | None = None  # frozen dataclass of its parameters, or None
    fields: tuple[str, ...] = ()  # per-image numbers it returns: record fields, e.g. "completeness"
    reference: str = ""  # the paper, for docs and the report
    baseline: bool = False  # model-free map, scored like a method but never mistaken for one
    origin: str = ""  # the module that registered it

    @property
    def draw(self) -> str:
        """How a picture shows it: "grey" (channel-summed magnitude) or "heat" (over the photo)."""
        return "heat" if self.kind == "heat" else "grey"

    @property
    def builtin(self) -> bool:
        return self.origin.startswith("xcnn.")

    def default_params(self) -> Any:
        return None if self.params is None else self.params()

    def function(self) -> Callable[..., Any]:
        return self.fn

    def describe(self) -> dict[str, Any]:
        """What a run folder keeps of it, so the report (torch-free) draws and names it."""
        return {"label": self.label, "kind": self.kind, "draw": self.draw, "reference": self.reference,
                "baseline": self.baseline, "fields": list(self.fields), "origin": self.origin}


@dataclass(frozen=True)
class Metric:
    """A per-map metric: a pure function of maps, masks and a context, B values per call."""

    name: str  # the record field it fills
    label: str
    fn: Callable[..., Any] = dataclasses.field(repr=False, compare=False, default=lambda m, k, c: None)
    higher_is_better: bool | None = True  # None: neither (a description, not a score)
    category: str = "localisation"  # Quantus's categories: localisation, complexity, ...
    paper: str = ""
    fields: tuple[str, ...] = ()  # record fields it fills besides its name (P also gives E, E_celk)
    boolean: bool = False  # its values are yes/no (1.0 / 0.0, NaN: undefined), kept as true/false/null
    origin: str = ""
    params: type | None = None  # frozen dataclass of its parameters ([metrics.NAME]); read as ctx.params

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "higher_is_better": self.higher_is_better, "category": self.category,
                "paper": self.paper, "fields": list(self.fields), "origin": self.origin}


@dataclass
class MetricContext:
    """What a per-map metric may read besides the maps and masks (all for the same B maps)."""

    method: str  # the method (or baseline) whose maps these are
    photos: Any = None  # B×H×W×3 uint8 RGB at the model's input size, when the caller has them
    values: dict[str, Any] = dataclasses.field(default_factory=dict)  # fields of the metrics run before
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)  # shared work between metrics
    params: Any = None  # the running metric's parameters (its dataclass, the run's values), or None


Scope = Literal["maps", "photos"]


@dataclass(frozen=True)
class Score:
    """A summary number of a model check, as the report's method card shows it: the mean, per
    method, of the rows with this test and measure (step null, or the last step)."""

    test: str
    measure: str
    label: str  # the card's column
    higher_is_better: bool | None = True  # None: neither (a description, like a similarity)
    last_step: bool = False  # the rows at the highest step (randomisation: every layer re-initialised)

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Check:
    """A model check: it runs the model again (on perturbed photos, other classes, randomised
    weights ...) and writes rows to RUN_DIR/checks.jsonl.

    scope "maps": it reads the maps a record batch just computed, on the first
    ``checks.faithfulness_photos`` (photo, category) pairs at ``checks.faithfulness_sizes``
    (deletion / insertion). scope "photos": it gets a batch of its own, the first N photos
    (N: its parameter ``photos``, else 8) at the run's first resized size (randomisation,
    dependence: a check that compares photos with each other)."""

    name: str
    label: str
    fn: Callable[..., Any] = dataclasses.field(repr=False, compare=False, default=lambda ctx: ())
    category: str = "faithfulness"  # Quantus's categories: faithfulness, robustness, randomisation, ...
    paper: str = ""
    scope: Scope = "maps"
    params: type | None = None  # frozen dataclass; its ``steps`` and ``photos`` fields are special (check_identity)
    scores: tuple[Score, ...] = ()
    origin: str = ""

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "category": self.category, "paper": self.paper, "scope": self.scope,
                "scores": [s.describe() for s in self.scores], "origin": self.origin}


@dataclass(frozen=True)
class CheckRow:
    """One value a check gives: for photo ``photo`` (its index in the check's batch) and method
    ``method``. ``step``: the point of a curve or of a cascade (None: a summary value)."""

    photo: int
    method: str
    test: str
    measure: str
    value: float
    step: int | None = None


_METHODS: dict[str, Method] = {}
_CHECKS: dict[str, Check] = {}
_METRICS: dict[str, Metric] = {}
_loading: list[str] = []  # the plugin being imported, to name it in errors
_builtins_loaded = False
_builtins_depth = 0


def _origin(fn: Callable[..., Any]) -> str:
    return _loading[-1] if _loading else str(getattr(fn, "__module__", "") or "")


def _refuse_twice(kind: str, name: str, table: Mapping[str, Any], fn: Callable[..., Any]) -> None:
    if name in table:
        raise XcnnError(f"{_origin(fn)}: {kind} {name!r} ({getattr(fn, '__qualname__', fn)}) is registered twice "
                        f"(first by {table[name].origin}); give it another name")


def method(name: str, *, label: str, kind: Kind, rules: Iterable[Rule] = (), needs_layer: bool = False,
           extra_passes: bool = False, params: type | None = None, fields: Iterable[str] = (),
           reference: str = "", baseline: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn(ctx: xcnn.Context) -> Tensor`` as a saliency method (see the module docstring).

    ``kind``: "signed" (B×3×H×W) or "heat" (B×1×H×W in [0, 1]); ``rules``: the engine's shared
    backward passes it reads (gradient, deconvnet, guided); ``needs_layer``: it reads the CAM
    layer; ``extra_passes``: it runs the model itself (``ctx.run``, ``ctx.run_with_layer``);
    ``params``: its frozen parameter dataclass (the function reads ``ctx.params``);
    ``fields``: the per-image numbers it leaves in ``ctx.extras[NAME]``, kept in the records."""
    rules = tuple(rules)

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        _plugin_first(fn)
        where = f"{_origin(fn)}: method {name!r}"
        if not name.isidentifier() or name != name.lower():
            raise XcnnError(f"{where}: a name is lowercase letters, digits and _, starting with a letter")
        if kind not in ("signed", "heat"):
            raise XcnnError(f"{where}: kind {kind!r} is not \"signed\" or \"heat\"")
        if not set(rules) <= set(RULES):
            raise XcnnError(f"{where}: rules {rules!r}: each one of {', '.join(RULES)}")
        _check_params_type(params, where)
        table = _METHODS
        _refuse_twice("method", name, table, fn)
        table[name] = Method(name, label, kind, fn, rules, needs_layer, extra_passes, params, tuple(fields),
                             reference, baseline, _origin(fn))
        return fn

    return register


def metric(name: str, *, label: str, higher_is_better: bool | None = True, category: str = "localisation",
           paper: str = "", fields: Iterable[str] = (), boolean: bool = False, params: type | None = None,
           ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn(maps, masks, ctx) -> B values`` as a per-map metric: maps B×C×H×W and masks
    B×H×W as NumPy arrays (float, bool), ``ctx`` a ``xcnn.MetricContext``. It runs on every record
    (a config's ``[metrics] NAME = false`` turns it off) and its value lands under ``name``. A
    metric with ``fields`` returns a dict of B values per field, its own name included;
    ``params``: its frozen parameter dataclass (``[metrics.NAME]``), read as ``ctx.params``."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        _plugin_first(fn)
        if not name.isidentifier():
            raise XcnnError(f"{_origin(fn)}: metric {name!r}: a name is letters, digits and _")
        _check_params_type(params, f"{_origin(fn)}: metric {name!r}")
        _refuse_twice("metric", name, _METRICS, fn)
        _METRICS[name] = Metric(name, label, fn, higher_is_better, category, paper, tuple(fields), boolean,
                                _origin(fn), params)
        return fn

    return register


def model_check(name: str, *, label: str, category: str = "faithfulness", paper: str = "", scope: Scope = "maps",
                params: type | None = None, scores: Iterable[Score] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn(ctx: xcnn.CheckContext) -> Iterable[xcnn.CheckRow]`` as a model check
    (``xcnn.check``; see ``Check``). It runs only when a config's ``[checks]`` turns it on
    (``NAME = true``, or a ``[checks.NAME]`` table of its parameters)."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        _plugin_first(fn)
        where = f"{_origin(fn)}: check {name!r}"
        if not name.isidentifier() or name != name.lower():
            raise XcnnError(f"{where}: a name is lowercase letters, digits and _, starting with a letter")
        if scope not in ("maps", "photos"):
            raise XcnnError(f"{where}: scope {scope!r} is not \"maps\" or \"photos\"")
        _check_params_type(params, where)
        _refuse_twice("check", name, _CHECKS, fn)
        _CHECKS[name] = Check(name, label, fn, category, paper, scope, params, tuple(scores), _origin(fn))
        return fn

    return register


def _check_params_type(params: type | None, where: str) -> None:
    if params is None:
        return
    if not (dataclasses.is_dataclass(params) and params.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        raise XcnnError(f"{where}: params must be a frozen dataclass (@dataclass(frozen=True))")
    try:
        params()
    except Exception as err:
        raise XcnnError(f"{where}: params {params.__name__}() needs a default for every field ({err})") from None


# --- the tables -----------------------------------------------------------------------------

def _plugin_first(fn: Callable[..., Any]) -> None:
    """Before a plugin's entry, the built-ins' (so a plugin that takes a built-in's name is the one
    refused); a built-in module registers without loading the others (and torch with them)."""
    if not _builtin_module(str(getattr(fn, "__module__", ""))):
        _builtins()


def _builtin_module(module: str) -> bool:
    return any(module.startswith(f"{package}.") for package in BUILTIN_PACKAGES)


def builtin_modules() -> list[str]:
    """Every module of the built-in packages, in name order."""
    import pkgutil

    names = []
    for package in BUILTIN_PACKAGES:
        path = importlib.import_module(package).__path__
        names += [f"{package}.{m.name}" for m in sorted(pkgutil.iter_modules(path), key=lambda m: m.name)]
    return names


def _builtins() -> None:
    global _builtins_loaded, _builtins_depth
    if _builtins_loaded:
        return
    # Re-entrant: a built-in module that reads a table while it is imported (the Captum-style
    # classes) gets every built-in, the modules after it included, not the ones imported so far.
    _builtins_depth += 1
    try:
        for module in builtin_modules():
            importlib.import_module(module)
    finally:
        _builtins_depth -= 1
    if _builtins_depth == 0 and not _builtins_loaded:
        _builtins_loaded = True
        load_entry_points()


# The built-ins' order everywhere (tables, figures, records): the thesis's five first; a built-in
# not listed here comes after these, in registration order.
BUILTIN_ORDER = ("gradient", "deconvnet", "guided_backprop", "gradcam", "guided_gradcam", "input_x_gradient",
                 "gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam", "integrated_gradients",
                 "smoothgrad", "uniform", "centre", "edges")


def methods() -> dict[str, Method]:
    """Every method and baseline: the built-ins in BUILTIN_ORDER, then plugins' as registered."""
    _builtins()
    if list(_METHODS)[:len(BUILTIN_ORDER)] != [n for n in BUILTIN_ORDER if n in _METHODS]:
        rank = {n: i for i, n in enumerate(BUILTIN_ORDER)}
        ordered = sorted(_METHODS.items(), key=lambda item: rank.get(item[0], len(rank)))
        _METHODS.clear()
        _METHODS.update(ordered)  # sorted() is stable: plugins keep their registration order
    return _METHODS


def metrics() -> dict[str, Metric]:
    """Every per-map metric, in registration order."""
    _builtins()
    return _METRICS


def checks() -> dict[str, Check]:
    """Every model check, in registration order (the built-ins first)."""
    _builtins()
    return _CHECKS


def get_check(name: str) -> Check:
    entry = checks().get(name)
    if entry is None:
        hint = did_you_mean(str(name), list(_CHECKS)) or f"known: {', '.join(_CHECKS)}"
        raise XcnnError(f"unknown check {name!r}; {hint}")
    return entry


def check_identity(params: Any) -> tuple[int | None, str | None]:
    """What a check's parameters make of its rows' identity: (steps, params). A field ``steps``
    goes to the rows' ``steps`` column (0.2's checks had only that one); ``photos`` says how many
    photos it runs on, not what a row means, and is left out; any other field goes into a short
    hash, the rows' ``params`` column (None when there is none), so rows made with other
    parameters are wanted again instead of counting as done."""
    return (None, None) if params is None else identity_of_values(dataclasses.asdict(params))


def get(name: str) -> Method:
    """The entry of a method or baseline; a one-line XcnnError with "did you mean" otherwise."""
    entry = methods().get(name)
    if entry is None:
        hint = did_you_mean(str(name), list(_METHODS)) or f"known: {', '.join(_METHODS)}"
        raise XcnnError(f"unknown method {name!r}; {hint}")
    return entry


def method_names(*, baselines: bool = False) -> tuple[str, ...]:
    return tuple(n for n, m in methods().items() if m.baseline == baselines)


def check(names: Iterable[str]) -> tuple[str, ...]:
    """Distinct known method names, in registry order (so records always sort the same way)."""
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise XcnnError(f"no method given; choose from {', '.join(method_names())}")
    for n in names:
        if get(n).baseline:
            raise XcnnError(f"{n!r} is a baseline, not a method; baselines are turned on in [checks]")
    if len(set(names)) != len(names):
        raise XcnnError(f"a method is listed twice: {names}")
    return tuple(m for m in method_names() if m in names)


def describe(names: Iterable[str] | None = None) -> dict[str, Any]:
    """The methods (all, or ``names`` and the baselines) and every metric, as a run folder keeps
    them for the report: names in registry order, each with its label, kind, paper, ..."""
    wanted = None if names is None else set(names)
    kept = {n: m.describe() for n, m in methods().items() if wanted is None or n in wanted or m.baseline}
    # config.json sorts its keys: the orders are kept apart
    return {"methods": kept, "order": list(kept), "metrics": {n: m.describe() for n, m in metrics().items()},
            "metric_order": list(metrics()), "checks": {n: c.describe() for n, c in checks().items()},
            "check_order": list(checks())}


# --- parameters ---------------------------------------------------------------------------

def parse_params(entry: Method | Check | Metric, table: Mapping[str, Any], where: str) -> Any:
    """A method's (or check's) parameters from a TOML table or CLI values: unknown keys and wrong
    types are one line naming ``where``; the dataclass validates the values itself."""
    if entry.params is None:
        if table:
            kind = "check" if isinstance(entry, Check) else "metric" if isinstance(entry, Metric) else "method"
            raise XcnnError(f"{where}: {kind} {entry.name!r} has no parameters")
        return None
    fields = {f.name: f for f in dataclasses.fields(entry.params)}
    for key, value in table.items():
        if key not in fields:
            hint = did_you_mean(key, list(fields)) or f"known: {', '.join(fields)}"
            raise XcnnError(f"{where}.{key}: unknown parameter of {entry.name}; {hint}")
        default = getattr(entry.params(), key)
        if not _same_type(value, default):
            raise XcnnError(f"{where}.{key}: expected {type(default).__name__}, got {value!r}")
    try:
        return entry.params(**{k: _converted(v, getattr(entry.params(), k)) for k, v in table.items()})
    except (ValueError, TypeError) as err:
        raise XcnnError(f"{where}: {err}") from None


def _converted(value: Any, default: Any) -> Any:
    if isinstance(default, float):
        return float(value)
    if isinstance(default, tuple):  # TOML and JSON give lists; a frozen dataclass keeps tuples
        return tuple(float(v) if default and isinstance(default[0], float) else v for v in value)
    return value


def _same_type(value: Any, default: Any) -> bool:
    if isinstance(default, tuple):
        kinds = {type(v) for v in default} or {int, float, str}
        return (isinstance(value, (list, tuple))
                and all(isinstance(v, tuple(kinds | ({int} if float in kinds else set()))) and not isinstance(v, bool)
                        for v in value))
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if default is None:  # an optional number: None means "not set"
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def params_identity(entry: Method, params: Any) -> dict[str, Any] | None:
    """What a method's parameters contribute to a run's identity (None: it has none)."""
    return None if params is None else dataclasses.asdict(params)


# --- plugins ----------------------------------------------------------------------------

def load_plugins(names: Iterable[str], base: Path | None = None) -> dict[str, str]:
    """Import each plugin module (from ``base`` first, then sys.path) and return {module: sha256
    of its source}. Anything it raises, SystemExit included, is one line naming the plugin;
    Ctrl-C stays an interrupt."""
    _builtins()
    hashes = {}
    for name in names:
        if not all(part.isidentifier() for part in str(name).split(".")):
            raise XcnnError(f"plugin {name!r}: give a module name (mymethods, or package.module), not a path")
        hashes[name] = _import_plugin(name, base)
    return hashes


def _import_plugin(name: str, base: Path | None) -> str:
    if name in sys.modules:
        return _source_hash(sys.modules[name])
    added = base is not None and str(base) not in sys.path
    if added:
        sys.path.insert(0, str(base))
    _loading.append(name)
    try:
        module = importlib.import_module(name)
    except XcnnError:
        raise
    except KeyboardInterrupt:
        raise
    except ModuleNotFoundError as err:
        if err.name == name or name.startswith(f"{err.name}."):
            where = f" (looked in {base} and on sys.path)" if base else " (looked on sys.path)"
            raise XcnnError(f"plugin {name!r} not found{where}; check the name or install it") from None
        raise XcnnError(f"plugin {name!r}: importing it raised ModuleNotFoundError ({err})") from None
    except BaseException as err:  # user code: SystemExit too
        text = " ".join(str(err).split())[:200]
        raise XcnnError(f"plugin {name!r}: importing it raised {type(err).__name__}"
                        + (f" ({text})" if text else "")) from None
    finally:
        _loading.pop()
        if added:
            sys.path.remove(str(base))
    return _source_hash(module)


def _source_hash(module: Any) -> str:
    file = getattr(module, "__file__", None)
    try:
        return "sha256:" + hashlib.sha256(Path(file).read_bytes()).hexdigest() if file else "unknown"
    except OSError:
        return "unknown"


def load_entry_points() -> None:
    """Import the installed packages' plugins (entry-point group ``xcnn.plugins``)."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINTS):
        _loading.append(ep.value)
        try:
            ep.load()
        except XcnnError:
            raise
        except KeyboardInterrupt:
            raise
        except BaseException as err:
            raise XcnnError(f"installed plugin {ep.name!r} ({ep.value}): loading it raised {type(err).__name__} "
                            f"({' '.join(str(err).split())[:200]}); uninstall or fix it") from None
        finally:
            _loading.pop()
