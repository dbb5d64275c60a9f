"""What every table's reader shares: where the file is, one-line failures, typed values, and
the TOML keys a table takes (read from its dataclass's fields, so the schema is written once)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xcnn.errors import XcnnError, did_you_mean


@dataclass(frozen=True)
class Source:
    """The config file being read: failures name it, relative paths are read from its folder."""

    file: Path

    @property
    def base(self) -> Path:
        return self.file.parent

    def fail(self, key: str, what: str) -> XcnnError:
        return XcnnError(f"{self.file}: {key}: {what}")

    def path(self, value: str) -> str:
        return str((self.base / value).resolve())


def toml_keys(cls: type) -> dict[str, str]:
    """{TOML key: field name} of a table's dataclass: every field but those whose metadata says
    ``toml=None`` (read from other keys), under the name its ``toml`` metadata gives."""
    out = {}
    for f in dataclasses.fields(cls):
        key = f.metadata.get("toml", f.name)
        if key is not None:
            out[key] = f.name
    return out


def known(table: dict[str, Any], keys: set[str] | dict[str, str], section: str, src: Source,
          shown: str | None = None) -> None:
    """One line for a key the table does not take, with the nearest known one."""
    for key in table:
        if key not in keys:
            names = sorted(keys)
            hint = did_you_mean(key, names)
            raise src.fail(f"{shown or section}.{key}", f"unknown key; {hint + ' ' if hint else ''}known: {', '.join(names)}")


def table_of(value: Any, key: str, src: Source) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise src.fail(key, f"expected a [{key}] table")
    return value


def typed(value: Any, kind: type, key: str, src: Source) -> Any:
    # bool is an int to Python, never to a config reader
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise src.fail(key, f"expected {kind.__name__}, got {value!r}")
    return value


def whole(value: Any, key: str, src: Source, least: int = 1, hint: str = "") -> int:
    """A whole number >= ``least`` (``hint`` says what the smallest means)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise src.fail(key, f"expected a whole number >= {least}{hint}, got {value!r}")
    return value


def seed(value: Any, key: str, src: Source) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise src.fail(key, f"expected a whole number >= 0, got {value!r}")
    return value


def number(value: Any, key: str, src: Source, ok: bool, expected: str) -> float:
    """A float where ``ok`` (the range check on the value) holds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok:
        raise src.fail(key, f"expected {expected}, got {value!r}")
    return float(value)


def in_range(value: Any, low: float, high: float, closed: bool = True) -> bool:
    """``low <= value <= high`` (``< high`` when not closed), False for what is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return low <= value <= high if closed else low <= value < high
