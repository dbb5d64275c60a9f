"""The run's single writer: lock, identity, crash-safe JSON-lines stores, pictures, exports.

Only the process that holds ``RUN_DIR/.lock`` writes into RUN_DIR (the local runner, or the Ray
driver), so whatever computes records — one process or a cluster — hands them here. The files'
names, the write groups of the JSON-lines files and their reading (torn-tail repair) are the run
folder's contract, in ``xcnn.runfolder``; this module writes what it reads.
"""
from __future__ import annotations

import errno
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

from xcnn.errors import XcnnError
from xcnn.files import temporary_for, write_atomic
from xcnn.runfolder.jsonl import (  # noqa: F401  (re-exported: the store's callers name them here)
    PART,
    CheckGroup,
    CheckKey,
    JsonlReader,
    RecordKey,
    check_groups,
    check_key,
    read_json,
    record_fault,
    record_key,
    started_counts,
    to_json_line,
)
from xcnn.runfolder.layout import (
    CHECKS_CSV,
    CHECKS_FILE,
    CONFIG_FILE,
    EXP_FILE,
    FAILURES_FILE,
    FILTERED_FILE,
    LOCK_FILE,
    MAPS_DIR,
    PICTURES_DIR,
    RECORDS_CSV,
    RECORDS_FILE,
    SKIPPED_FILE,
    STARTED_FILE,
)
from xcnn.runfolder.lock import holder_text
from xcnn.runfolder.records import UnitKey, UnitResult, unit_key

log = logging.getLogger(__name__)

class JsonlStore(JsonlReader):
    """Append-only JSON-lines file written in fsynced groups (``xcnn.runfolder.jsonl`` says how)."""

    def __init__(self, path: Path, key: Callable[[dict[str, Any]], Hashable] = record_key) -> None:
        super().__init__(path, key)
        self.done: set[Any] = set()
        self._fd: int | None = None

    def open(self) -> JsonlStore:
        """Repair the torn tail, learn which records are done, and get ready to append."""
        fresh = not self.path.exists()
        good_end = 0 if fresh else self._scan()
        if not fresh and good_end < self.path.stat().st_size:
            log.warning("%s: dropping a torn last write (%d bytes); it is computed again",
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
        """Write one group of lines in one call and make them durable before returning."""
        if self._fd is None:
            raise RuntimeError("store not open")
        if not lines:
            return
        if len({unit_key(r) for r in lines}) != 1:
            raise ValueError("a write group holds the records of one unit")
        n = len(lines)
        data = b"".join(to_json_line({**r, PART: [i, n]}) for i, r in enumerate(lines))
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self.done.update(self.key(r) for r in lines)

    def _scan(self) -> int:
        """Fill ``done`` and return the byte offset just after the last whole group."""
        self.done.clear()
        good_end = 0
        for group, end in self._groups():
            self.done.update(self.key(r) for r in group)
            good_end = end
        return good_end


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


class RunLock:
    """An exclusive lock on RUN_DIR for a run's whole life (``fcntl.flock``, released by the
    kernel when the process dies, so a killed run never leaves a stale lock)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise XcnnError(f"{self.path.parent} is in use by {holder}; wait for that run to end "
                                "(or stop it), or choose another --out") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder_text().encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def append_lines(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append lines and fsync (the in-progress marks: durable before the work they announce)."""
    data = b"".join(to_json_line(r) for r in records)
    if not data:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class RunStore:
    """RUN_DIR as the single writer sees it: lock, config/identity, records, failures, units left
    out by run.max_target_rank, the in-progress log, pictures. Open it as a context manager; it
    holds the lock until closed."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)
        self.lock = RunLock(self.dir)
        self.records = JsonlStore(self.dir / RECORDS_FILE)
        self.failures = JsonlStore(self.dir / FAILURES_FILE)
        self.checks = JsonlStore(self.dir / CHECKS_FILE, key=check_key)
        # Filtered units are done for good (max_target_rank is part of the identity), so a resumed
        # run skips them; kept apart from records.jsonl so no reader of records ever sees them.
        self.filtered = JsonlStore(self.dir / FILTERED_FILE, key=unit_key)
        self.check_rows = 0  # check rows written since opened
        self._groups: set[CheckGroup] | None = None
        self._groups_seen = -1
        self.starts: Counter[UnitKey] = Counter()

    def __enter__(self) -> RunStore:
        check_run_folder(self.dir)  # before anything is written or deleted
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            _clean_temporaries(self.dir)
            self.records.open()
            for lazy in (self.checks, self.filtered):  # made on the first row, so a run without any has none
                if lazy.path.exists():
                    lazy.open()
            self.starts = started_counts(self.dir / STARTED_FILE)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.records.close()
        self.checks.close()
        self.filtered.close()
        self.failures.close()
        self.lock.release()

    # --- identity --------------------------------------------------------------------------

    def check_identity(self, identity: dict[str, Any], source: str) -> None:
        """Refuse a run folder whose records depend on something else than this config's."""
        from xcnn.experiment.config import compare_identity

        stored = read_json(self.dir / CONFIG_FILE)
        if stored is None:
            if self.records.done:
                raise XcnnError(f"{self.dir} holds records but no {CONFIG_FILE}; choose another --out")
            return
        if not isinstance(stored.get("identity"), dict):
            raise XcnnError(f"{self.dir} was made by an older xcnn ({stored.get('xcnn', '?')}) with another record "
                            "layout; choose another --out (or delete the folder to start over)")
        changed = compare_identity(stored["identity"], identity)
        if changed:
            raise XcnnError(f"{self.dir} holds a run whose records depend on another {', '.join(changed)} than "
                            f"{source or 'this config'}; use another --out (or delete the folder to start over)")

    def write_config(self, body: dict[str, Any]) -> None:
        write_atomic(self.dir / CONFIG_FILE, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())

    # --- failures and the in-progress log ----------------------------------------------------

    def open_failures(self, keep: Iterable[dict[str, Any]] = ()) -> None:
        """Start the failure list afresh (a rerun tries failed units again: a deterministic
        failure comes back unchanged, a transient one gets its records), keeping ``keep``."""
        path = self.dir / FAILURES_FILE
        if path.exists() and path.stat().st_size:
            log.info("trying the unit(s) that failed before again")
        write_atomic(path, b"")
        self.failures.open()
        for row in keep:
            self.failures.append([row])

    @property
    def failed(self) -> set[UnitKey]:
        return {k[:4] for k in self.failures.done}

    @property
    def filtered_units(self) -> set[UnitKey]:
        return set(self.filtered.done)

    def mark(self, keys: Sequence[UnitKey], event: str) -> None:
        """Log units as started (durably, before the work) or ended."""
        append_lines(self.dir / STARTED_FILE, [
            {"CNN": k[0], "size": k[1], "id": k[2], "class": k[3], "event": event} for k in keys])

    def forget_starts(self) -> None:
        write_atomic(self.dir / STARTED_FILE, b"")
        self.starts.clear()

    # --- results -----------------------------------------------------------------------------

    def add(self, result: UnitResult) -> int:
        """Write one unit's result: its files first, then its new records in one durable write
        (so a unit counts as done only once its pictures exist), then its new check rows in
        another; a failure goes to the failure list, a unit run.max_target_rank left out to
        filtered.jsonl. Returns the records written."""
        key, failure, files, photo, filtered = result.key, result.failure, result.files, result.photo, result.filtered
        records, checks = result.record_rows(), result.checks
        if failure is not None:
            if key not in self.failed:
                self.failures.append([{"CNN": key[0], "size": key[1], "id": photo[0], "class": key[3],
                                       "file": photo[1], "reason": failure}])
            return 0
        new = [r for r in records if record_key(r) not in self.records.done]
        new_checks = [r for r in checks if check_key(r) not in self.checks.done]
        try:
            if filtered is not None:
                if key not in self.filtered.done:
                    if self.filtered._fd is None:
                        self.filtered.open()
                    self.filtered.append([filtered])  # one fsynced line: a kill loses no decision
                return 0
            if new_checks and not new:
                self._add_checks(new_checks)
            if not new:
                return 0
            for rel, data in files.items():
                path = self._inside(rel)
                if not path.exists():  # pictures are a function of the unit: never rewritten
                    path.parent.mkdir(parents=True, exist_ok=True)
                    # No fsync: a killed process loses nothing from the page cache, and the
                    # unit's records, which are fsynced, are appended only after its files exist.
                    write_atomic(path, data, durable=False)
            self.records.append(new)
            if new_checks:
                self._add_checks(new_checks)
        except OSError as err:
            raise XcnnError(f"cannot write into {self.dir} ({err.strerror or err}); free disk space or fix "
                            "permissions, then rerun the same command to resume") from None
        return len(new)

    def _add_checks(self, rows: Sequence[dict[str, Any]]) -> None:
        if self.checks._fd is None:
            self.checks.open()
        self.checks.append(rows)
        self.check_rows += len(rows)
        self._groups = None

    @property
    def check_groups(self) -> set[CheckGroup]:
        """The (unit, method, check, parameters) whose rows are in checks.jsonl."""
        if self._groups is None or self._groups_seen != len(self.checks.done):
            self._groups, self._groups_seen = check_groups(self.checks.done), len(self.checks.done)
        assert self._groups is not None
        return self._groups

    def _inside(self, rel: str) -> Path:
        path = (self.dir / rel).resolve()
        if not path.is_relative_to(self.dir.resolve()):
            raise ValueError(f"a worker sent a file outside the run folder: {rel!r}")
        return path


# --- what a run folder is -------------------------------------------------------------------

DEMO_DIR = "demo-data"  # the demo set, built into the run folder unless the config names a cache
# What a run leaves before its config.json exists (killed while it loaded the data or the models).
_EARLY = {LOCK_FILE, RECORDS_FILE, STARTED_FILE, FAILURES_FILE, CHECKS_FILE, FILTERED_FILE, DEMO_DIR}
# The run's files that write_atomic writes, at the top of the folder and in the folders it fills.
_WRITTEN = {CONFIG_FILE, FAILURES_FILE, STARTED_FILE, SKIPPED_FILE, EXP_FILE, RECORDS_CSV, CHECKS_CSV}
_FILLED = (PICTURES_DIR, MAPS_DIR, DEMO_DIR)


def check_run_folder(run_dir: Path) -> None:
    """Refuse, before anything is written, a folder that is not a run: xcnn writes and deletes
    files in a run folder, and a user's folder must keep every file it holds. A run is a folder
    that does not exist yet, an empty one, one with xcnn's config.json, or one holding only what
    a run killed before writing its config.json leaves (resumed, not refused forever)."""
    for path in (run_dir, *run_dir.parents):  # the first part of the path that exists
        if path.exists():
            if not path.is_dir():
                raise XcnnError(f"{path} is a file; --out takes a folder (a new one, or a run's)")
            break
    if not run_dir.is_dir():
        return
    config = run_dir / CONFIG_FILE
    if config.exists():
        body = read_json(config)
        if body is not None and ("identity" in body or "xcnn" in body):
            return
        raise XcnnError(f"{run_dir} is not an xcnn run folder (its {CONFIG_FILE} was not written by xcnn); "
                        "choose a new or empty folder for --out")
    for entry in sorted(run_dir.iterdir()):
        early = entry.name in _EARLY or temporary_for(entry.name) in (_EARLY | _WRITTEN)
        if not early:
            raise XcnnError(f"{run_dir} is not an xcnn run folder and not empty (it holds {entry.name}); choose a "
                            "new or empty folder for --out")
        if entry.name in (RECORDS_FILE, CHECKS_FILE, FILTERED_FILE) and entry.is_file() and entry.stat().st_size:
            raise XcnnError(f"{run_dir} holds {entry.name} but no {CONFIG_FILE}; choose another --out")


def _clean_temporaries(run_dir: Path) -> None:
    """Temporary files left by a run killed (or a disk that filled) mid-write: only the names
    write_atomic gives the run's own files, and only in the folders the run writes."""
    for entry in run_dir.iterdir():
        if temporary_for(entry.name) in _WRITTEN and entry.is_file():
            entry.unlink(missing_ok=True)
    for name in _FILLED:
        for folder, _, names in os.walk(run_dir / name):  # symbolic links to folders are not followed
            for file in names:
                path = Path(folder) / file
                if temporary_for(file) is not None and path.is_file() and not path.is_symlink():
                    path.unlink(missing_ok=True)
