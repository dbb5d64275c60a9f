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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from xcnn.errors import XcnnError, did_you_mean
from xcnn.identity import identity_of_values

# The entries and the parameter helpers live in their own modules; their names stay importable here.
from xcnn.registry_entries import Check as Check
from xcnn.registry_entries import CheckInfo as CheckInfo
from xcnn.registry_entries import CheckRow as CheckRow
from xcnn.registry_entries import Kind as Kind
from xcnn.registry_entries import Method as Method
from xcnn.registry_entries import MethodInfo as MethodInfo
from xcnn.registry_entries import Metric as Metric
from xcnn.registry_entries import MetricContext as MetricContext
from xcnn.registry_entries import MetricInfo as MetricInfo
from xcnn.registry_entries import Scope as Scope
from xcnn.registry_entries import Score as Score
from xcnn.registry_params import check_params_type as check_params_type
from xcnn.registry_params import params_identity as params_identity
from xcnn.registry_params import parse_params as parse_params

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's own from Python 3.11; annotations only

log = logging.getLogger(__name__)

Rule = Literal["gradient", "deconvnet", "guided"]
RULES: tuple[Rule, ...] = ("gradient", "deconvnet", "guided")
ENTRY_POINTS = "xcnn.plugins"

DEFAULT_METHODS: tuple[str, ...] = ("gradient", "deconvnet", "guided_backprop", "gradcam", "guided_gradcam")  # the thesis's five

# The packages whose modules register the built-in entries: every module in them is imported on
# the first question asked of a table, so a new built-in method or metric is one new module.
BUILTIN_PACKAGES = ("xcnn.methods", "xcnn.metrics")


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


Fn = TypeVar("Fn", bound=Callable[..., Any])


def method(name: str, **info: Unpack[MethodInfo]) -> Callable[[Fn], Fn]:
    """Register ``fn(ctx: xcnn.Context) -> Tensor`` as a saliency method (see the module docstring).

    ``kind``: "signed" (B×3×H×W) or "heat" (B×1×H×W in [0, 1]); ``rules``: the engine's shared
    backward passes it reads (gradient, deconvnet, guided); ``needs_layer``: it reads the CAM
    layer; ``extra_passes``: it runs the model itself (``ctx.run``, ``ctx.run_with_layer``);
    ``params``: its frozen parameter dataclass (the function reads ``ctx.params``);
    ``fields``: the per-image numbers it leaves in ``ctx.extras[NAME]``, kept in the records;
    ``reference``: the paper; ``baseline``: a model-free map (``MethodInfo``)."""
    values = _keywords("method", dict(info), MethodInfo)
    values["rules"] = rules = tuple(values.get("rules", ()))
    values["fields"] = tuple(values.get("fields", ()))

    def register(fn: Fn) -> Fn:
        _plugin_first(fn)
        where = f"{_origin(fn)}: method {name!r}"
        if not name.isidentifier() or name != name.lower():
            raise XcnnError(f"{where}: a name is lowercase letters, digits and _, starting with a letter")
        if values["kind"] not in ("signed", "heat"):
            raise XcnnError(f"{where}: kind {values['kind']!r} is not \"signed\" or \"heat\"")
        if not set(rules) <= set(RULES):
            raise XcnnError(f"{where}: rules {rules!r}: each one of {', '.join(RULES)}")
        check_params_type(values.get("params"), where)
        _refuse_twice("method", name, _METHODS, fn)
        _METHODS[name] = Method(name=name, fn=fn, origin=_origin(fn), **values)
        return fn

    return register


def metric(name: str, **info: Unpack[MetricInfo]) -> Callable[[Fn], Fn]:
    """Register ``fn(maps, masks, ctx) -> B values`` as a per-map metric: maps B×C×H×W and masks
    B×H×W as NumPy arrays (float, bool), ``ctx`` a ``xcnn.MetricContext``. It runs on every record
    (a config's ``[metrics] NAME = false`` turns it off) and its value lands under ``name``. A
    metric with ``fields`` returns a dict of B values per field, its own name included;
    ``params``: its frozen parameter dataclass (``[metrics.NAME]``), read as ``ctx.params``;
    ``higher_is_better``, ``category``, ``paper``, ``boolean``: see ``Metric`` (``MetricInfo``)."""
    values = _keywords("metric", dict(info), MetricInfo)
    values["fields"] = tuple(values.get("fields", ()))

    def register(fn: Fn) -> Fn:
        _plugin_first(fn)
        if not name.isidentifier():
            raise XcnnError(f"{_origin(fn)}: metric {name!r}: a name is letters, digits and _")
        check_params_type(values.get("params"), f"{_origin(fn)}: metric {name!r}")
        _refuse_twice("metric", name, _METRICS, fn)
        _METRICS[name] = Metric(name=name, fn=fn, origin=_origin(fn), **values)
        return fn

    return register


def model_check(name: str, **info: Unpack[CheckInfo]) -> Callable[[Fn], Fn]:
    """Register ``fn(ctx: xcnn.CheckContext) -> Iterable[xcnn.CheckRow]`` as a model check
    (``xcnn.check``; see ``Check`` and ``CheckInfo``). It runs only when a config's ``[checks]``
    turns it on (``NAME = true``, or a ``[checks.NAME]`` table of its parameters)."""
    values = _keywords("model_check", dict(info), CheckInfo)
    values["scores"] = tuple(values.get("scores", ()))

    def register(fn: Fn) -> Fn:
        _plugin_first(fn)
        where = f"{_origin(fn)}: check {name!r}"
        if not name.isidentifier() or name != name.lower():
            raise XcnnError(f"{where}: a name is lowercase letters, digits and _, starting with a letter")
        if values.get("scope", "maps") not in ("maps", "photos"):
            raise XcnnError(f"{where}: scope {values['scope']!r} is not \"maps\" or \"photos\"")
        check_params_type(values.get("params"), where)
        _refuse_twice("check", name, _CHECKS, fn)
        _CHECKS[name] = Check(name=name, fn=fn, origin=_origin(fn), **values)
        return fn

    return register


def _keywords(decorator: str, info: dict[str, Any], spec: type) -> dict[str, Any]:
    """``info`` as given, refused as Python refuses a wrong keyword (TypeError) where it has one
    that ``spec`` (a TypedDict) lacks or lacks one that ``spec`` requires."""
    known: frozenset[str] = spec.__required_keys__ | spec.__optional_keys__  # type: ignore[attr-defined]
    for key in info:
        if key not in known:
            hint = did_you_mean(key, sorted(known)) or f"known: {', '.join(sorted(known))}"
            raise TypeError(f"{decorator}() got an unexpected keyword argument {key!r}; {hint}")
    missing = sorted(spec.__required_keys__ - set(info))  # type: ignore[attr-defined]
    if missing:
        raise TypeError(f"{decorator}() missing required keyword argument(s): {', '.join(map(repr, missing))}")
    return info


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
