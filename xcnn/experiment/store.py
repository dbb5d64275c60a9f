"""Crash-safe, append-only JSON-lines stores for records and failures.

A *unit* is one (model, size, image, category): its records (one per method) go to disk in
one write followed by ``os.fsync``, so after ``kill -9`` at any moment the file holds whole
units plus at most one torn unit at the end. Opening a store cuts that torn tail away, so a
unit is either fully present or not done at all, and a rerun appends after the last whole one.
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from xcnn.errors import XcnnError

log = logging.getLogger(__name__)

UnitKey = tuple[str, str, int, str]  # (CNN, size, image id, category)


def unit_key(record: dict[str, Any]) -> UnitKey:
    return (record["CNN"], record["size"], int(record["id"]), record["class"])


def to_json_line(obj: dict[str, Any]) -> bytes:
    """One JSON line; NaN / inf become null so every line is valid JSON."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in obj.items()}
    return (json.dumps(clean, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


class JsonlStore:
    """Append-only file of units of ``per_unit`` JSON lines each, keyed by ``unit_key``."""

    def __init__(self, path: Path, per_unit: int) -> None:
        self.path = Path(path)
        self.per_unit = per_unit
        self.done: set[UnitKey] = set()
        self._fd: int | None = None

    def open(self) -> JsonlStore:
        """Repair the tail, learn which units are done, and get ready to append."""
        fresh = not self.path.exists()
        good_end = 0 if fresh else self._scan()
        if not fresh and good_end < self.path.stat().st_size:
            log.warning("%s: dropping a torn or incomplete last unit (%d bytes)",
                        self.path, self.path.stat().st_size - good_end)
            os.truncate(self.path, good_end)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if fresh:  # make the new directory entry itself durable
            _fsync_dir(self.path.parent)
        return self

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JsonlStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, lines: Sequence[dict[str, Any]]) -> None:
        """Write one unit's lines in one call and make them durable before returning."""
        if self._fd is None:
            raise RuntimeError("store not open")
        if len(lines) != self.per_unit or len({unit_key(r) for r in lines}) != 1:
            raise ValueError(f"a unit is {self.per_unit} lines of one key, got {len(lines)}")
        data = b"".join(to_json_line(r) for r in lines)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self.done.add(unit_key(lines[0]))

    def read(self) -> list[dict[str, Any]]:
        """All lines of whole units, in file order (a torn or incomplete last unit is left out)."""
        out: list[dict[str, Any]] = []
        pending: list[dict[str, Any]] = []
        for rec, _ in self._lines():
            if rec is None:
                break
            if pending and unit_key(pending[0]) != unit_key(rec):
                pending = []  # _scan refuses this on open; a reader just skips it
            pending.append(rec)
            if len(pending) == self.per_unit:
                out += pending
                pending = []
        return out

    def _scan(self) -> int:
        """Fill ``done`` and return the byte offset just after the last whole unit."""
        self.done.clear()
        good_end = 0
        pending: list[UnitKey] = []
        for rec, end in self._lines():
            if rec is None:  # torn line: only ever the last one
                break
            key = unit_key(rec)
            if pending and pending[0] != key:
                raise XcnnError(
                    f"{self.path}: unit {pending[0]} is incomplete in the middle of the file; "
                    "the file was edited by hand - restore it or start a new RUN_DIR"
                )
            pending.append(key)
            if len(pending) == self.per_unit:
                self.done.add(key)
                pending, good_end = [], end
        return good_end

    def _lines(self) -> Iterator[tuple[dict[str, Any] | None, int]]:
        """(record or None if torn, byte offset after it); stops after a torn line."""
        if not self.path.exists():
            return
        offset = 0
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                offset += len(raw)
                rec = _parse(raw)
                if rec is None:
                    if f.read(1):  # something follows: not a torn tail but a damaged file
                        raise XcnnError(
                            f"{self.path}: line {number} is not a record; the file is damaged - "
                            "restore it or start a new RUN_DIR"
                        )
                    yield None, offset
                    return
                yield rec, offset


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


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; the file fsync still holds
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Write a whole file so that readers see the old file or the new, never half of one.
    ``durable`` also survives a power cut (fsync), not only a killed process."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
