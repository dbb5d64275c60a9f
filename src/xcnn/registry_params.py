"""A registered entry's parameters: the frozen dataclass a method, metric or check declares
(``params=``), its values read from a TOML table or CLI options, and what they make of a run's
identity. Torch- and NumPy-free.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from xcnn.errors import XcnnError, did_you_mean
from xcnn.registry_entries import Check, Method, Metric


def check_params_type(params: type | None, where: str) -> None:
    if params is None:
        return
    if not (dataclasses.is_dataclass(params) and params.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        raise XcnnError(f"{where}: params must be a frozen dataclass (@dataclass(frozen=True))")
    try:
        params()
    except Exception as err:
        raise XcnnError(f"{where}: params {params.__name__}() needs a default for every field ({err})") from None


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
