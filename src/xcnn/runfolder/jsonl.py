"""Reading the run folder's JSON-lines files, and the keys that say which lines are done.

Records are appended in *groups* (one unit's records: one per method computed), each group in
one ``os.write`` followed by ``os.fsync`` (``xcnn.experiment.store`` writes them), and every
line says its place in its group (``"_part": [i, n]``). After ``kill -9`` at any moment the file
therefore holds whole groups plus at most one torn group at the end, which reading leaves out
(and the writer cuts away). A group that is incomplete in the *middle* of the file can only come
from editing it by hand, and is refused.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xcnn.errors import XcnnError
from xcnn.runfolder.records import UnitKey, unit_key

RecordKey = tuple[str, str, str, str, str]  # UnitKey + method
PART = "_part"  # [index in its write group, group length]; not exported


def record_key(record: dict[str, Any]) -> RecordKey:
    return (*unit_key(record), str(record.get("method", "")))


@dataclass(frozen=True)
class CheckKey:
    """A check row's identity: its unit, method, test, measure, step and the parameters it was
    made with (steps, seed), typed, so a check with other parameters is wanted again instead of
    counting as done, and a resumed run never matches rows through their text."""

    unit: UnitKey
    method: str
    test: str
    measure: str
    step: int | None
    steps: int | None
    seed: int | None
    check: str = ""  # the registered check that wrote it
    params: str | None = None  # the hash of its other parameters (xcnn.registry.check_identity)

    @property
    def group(self) -> CheckGroup:
        return CheckGroup(self.unit, self.method, self.check, self.steps, self.seed, self.params)


@dataclass(frozen=True)
class CheckGroup:
    """What one check wrote for one unit and method in one go: any row of it marks it done."""

    unit: UnitKey
    method: str
    check: str
    steps: int | None
    seed: int | None
    params: str | None


# Rows of xcnn 0.2 name no check: their test says which built-in wrote them.
_CHECK_OF_TEST = {"deletion": "faithfulness", "insertion": "faithfulness", "randomisation": "randomisation",
                  "input": "dependence", "class": "dependence"}


def check_key(row: dict[str, Any]) -> CheckKey:
    """The key of a row of checks.jsonl (as written, or as read back)."""
    test = str(row.get("test"))
    params = row.get("params")
    return CheckKey(unit_key(row), str(row.get("method", "")), test, str(row.get("measure")),
                    _whole(row.get("step")), _whole(row.get("steps")), _whole(row.get("seed")),
                    str(row.get("check") or _CHECK_OF_TEST.get(test, test)), None if params is None else str(params))


def check_groups(keys: Iterable[CheckKey]) -> set[CheckGroup]:
    return {k.group for k in keys}


def _whole(value: Any) -> int | None:
    return None if value is None else int(value)


def to_json_line(obj: dict[str, Any]) -> bytes:
    """One JSON line; NaN / inf become null so every line is valid JSON."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in obj.items()}
    return (json.dumps(clean, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


class JsonlReader:
    """A JSON-lines file of write groups, read back whole (see the module docstring)."""

    def __init__(self, path: Path, key: Callable[[dict[str, Any]], Hashable] = record_key) -> None:
        self.path = Path(path)
        self.key = key  # a line's done-key

    def read(self) -> list[dict[str, Any]]:
        """Every record of whole groups, in file order, without the group field.

        Damage in the middle of the file (an edited or truncated copy) is refused as on open;
        a torn last group (a run killed mid-write) is left out."""
        out: list[dict[str, Any]] = []
        for group, _ in self._groups():
            out += group
        return out

    def _groups(self) -> Iterator[tuple[list[dict[str, Any]], int]]:
        """Whole groups and the byte offset after each; stops at a torn tail, refuses damage."""
        pending: list[dict[str, Any]] = []
        size = 0
        for number, rec, end in self._lines():
            if rec is None:
                return  # a torn last line (_lines checked that nothing follows it)
            part = rec.pop(PART, None)
            if not (isinstance(part, list) and len(part) == 2 and all(type(v) is int for v in part)
                    and part[0] == len(pending) and part[1] >= 1 and (not pending or part[1] == size)):
                raise self._damaged(number)
            fault = record_fault(rec)
            if fault is not None:
                raise XcnnError(f"{self.path}: line {number}: {fault}, which no run writes (the file was edited or "
                                "damaged); restore it, or start a new RUN_DIR")
            size = part[1]
            pending.append(rec)
            if len(pending) == size:
                yield pending, end
                pending = []
        # a group left incomplete at the very end: the write was cut short by a kill

    def _damaged(self, number: int) -> XcnnError:
        return XcnnError(f"{self.path}: line {number} does not continue the records before it (the file was "
                         "edited or damaged); restore it, or start a new RUN_DIR")

    def _lines(self) -> Iterator[tuple[int, dict[str, Any] | None, int]]:
        """(line number, record or None if torn, byte offset after it); stops after a torn line."""
        if not self.path.exists():
            return
        offset = 0
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                offset += len(raw)
                rec = _parse(raw)
                if rec is None:
                    if f.read(1):  # something follows: not a torn tail but a damaged file
                        raise self._damaged(number)
                    yield number, None, offset
                    return
                yield number, rec, offset


def record_fault(rec: dict[str, Any]) -> str | None:
    """What makes a record impossible, or None: P = E / E_celk lies in [0, 1]. A null P (an
    all-zero map, or an overflowing one) is a record as the worker writes it."""
    p = rec.get("P")
    if p is None:
        return None
    if type(p) not in (int, float):
        return f"P is not a number ({p!r})"
    if not 0.0 <= p <= 1.0:
        return f"P {p} outside [0, 1]"
    e, total = rec.get("E", False), rec.get("E_celk", False)
    if type(e) in (int, float) and type(total) in (int, float):  # null: an infinite energy; absent: nothing to check
        if not total > 0 or not math.isclose(e / total, p, rel_tol=1e-9, abs_tol=1e-12):
            return f"P {p} disagrees with E / E_celk = {e} / {total}"
    return None


def _parse(raw: bytes) -> dict[str, Any] | None:
    if not raw.endswith(b"\n"):
        return None
    try:
        rec = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(rec, dict) or not {"CNN", "size", "id", "class"} <= rec.keys():
        return None
    return rec


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file, or None if the file does not exist; XcnnError if unreadable."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise XcnnError(f"{path}: unreadable ({err}); this is not an xcnn run folder - choose another --out") from None
    if not isinstance(value, dict):
        raise XcnnError(f"{path}: not an xcnn run file; choose another --out")
    return value


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file the run writes; unreadable lines (a torn tail) skipped."""
    try:
        raw = path.read_bytes()
    except OSError:
        return []
    out = []
    for line in raw.splitlines():
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def started_counts(path: Path) -> Counter[UnitKey]:
    """How often each unit was started since it last ended: 1 after one kill, 2 after two."""
    counts: Counter[UnitKey] = Counter()
    if not path.exists():
        return counts
    for raw in path.read_bytes().splitlines():
        try:
            line = json.loads(raw)
            key = unit_key(line)
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line: that start was never acted on
        if line.get("event") == "end":
            counts.pop(key, None)
        else:
            counts[key] += 1
    return counts
