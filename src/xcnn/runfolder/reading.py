"""The records and check rows a run folder holds, read back as the exports and the report show
them: sorted by a key that depends on the rows (and the run's order of methods) alone, and kept
to the methods (and baselines) the run's current config asks for; records of methods a config
asked for before stay in ``records.jsonl`` and are left out (see ``current_records``). Methods
are ordered, and baselines known, by the run's own descriptions (``descriptions.of_run``): a
plugin's methods exist only in the process that ran them. records.csv has a column for every
record field of the run's metrics and methods beyond FIELDS, after them.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from xcnn.errors import XcnnError
from xcnn.runfolder import descriptions
from xcnn.runfolder.jsonl import JsonlReader, check_key
from xcnn.runfolder.layout import CHECKS_FILE, CONFIG_FILE, RECORDS_FILE

# The contract's fields (docs/ARCHITECTURE.md "Records"), then ours.
FIELDS = (
    "id", "file", "class", "method", "CNN", "size", "group", "height", "width",
    "P", "E", "E_celk", "chance", "lift", "pointing_hit", "rma",
    "target", "target_name", "target_rank", "top1", "top1_name", "note",
    "image_png", "mask_png", "map_png",
    "target_prob", "ms", "rectifiers", "completeness", "xcnn", "target_rule",
)
GROUPS = ("original", "resized")
CHECK_FIELDS = ("id", "class", "CNN", "size", "method", "check", "test", "step", "measure", "value", "steps",
                "params", "seed", "xcnn")
_TESTS = {t: i for i, t in enumerate(("deletion", "insertion", "randomisation", "input", "class"))}


def sort_key(rec: dict[str, Any], described: descriptions.Described | None = None) -> tuple[Any, ...]:
    """Records by CNN, category, photo, size and method (in the run's registry order)."""
    method = (described or descriptions.builtin()).rank(rec["method"])
    photo = rec["id"]  # COCO ids are numbers, other formats name photos by path
    photo_key = (0, photo, "") if isinstance(photo, int) else (1, 0, str(photo))
    return (rec["CNN"], rec["class"], photo_key, rec["size"], method)


def read_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``RUN_DIR/records.jsonl``, sorted; NaN fields come back as None.
    A damaged store (an edited file) is refused with one line, as `xcnn run` refuses it."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise XcnnError(f"{run_dir}: no {CONFIG_FILE}; is this a folder made by `xcnn run`?")
    described = descriptions.of_run(run_dir)
    return sorted(JsonlReader(run_dir / RECORDS_FILE).read(), key=lambda rec: sort_key(rec, described))


def wanted_methods(run_dir: str | Path) -> frozenset[str] | None:
    """The methods RUN_DIR/config.json's config asks for, with the baselines when its [checks]
    baselines is on (or not said, as in older runs); None when the file does not say."""
    try:
        body = json.loads((Path(run_dir) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    config = body.get("config") if isinstance(body, dict) else None
    methods = config.get("methods") if isinstance(config, dict) else None
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        return None
    checks = config.get("checks") if isinstance(config, dict) else None
    baselines = checks.get("baselines", True) if isinstance(checks, dict) else True
    known = descriptions.of_run(run_dir).baselines
    return frozenset(methods) | (frozenset(known) if baselines is not False else frozenset())


def keep_wanted(rows: Iterable[dict[str, Any]], wanted: frozenset[str] | None) -> tuple[list[dict[str, Any]], Counter[str]]:
    """(the rows of wanted methods, the others counted by method); every row when wanted is None."""
    kept: list[dict[str, Any]] = []
    left: Counter[str] = Counter()
    for row in rows:
        if wanted is None or row.get("method") in wanted:
            kept.append(row)
        else:
            left[str(row.get("method"))] += 1
    return kept, left


def current_records(run_dir: str | Path) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The sorted records of the methods the current config asks for (what the exports and the
    report show), and the records left out, counted by method."""
    return keep_wanted(read_records(run_dir), wanted_methods(run_dir))


def current_checks(run_dir: str | Path) -> list[dict[str, Any]]:
    """The check rows the current config asks for: of its methods, and of the checks it turns on
    only those with its parameters and seed (rows of other settings stay in checks.jsonl; a
    check it no longer turns on keeps its rows); each with its ``check`` (0.2's rows have none:
    their test says it). Every row when config.json does not say."""
    rows, _ = keep_wanted(read_checks(run_dir), wanted_methods(run_dir))
    settings = check_settings(run_dir)
    out = []
    for row in rows:
        key = check_key(row)
        if settings is None or key.check not in settings or settings[key.check] == (key.steps, key.params, key.seed):
            out.append({**row, "check": key.check})
    return out


def check_settings(run_dir: str | Path) -> dict[str, tuple[int | None, str | None, int | None]] | None:
    """{check: (steps, params hash, seed)} of the checks RUN_DIR/config.json's config turns on;
    None when it does not say (runs written before checks were registered: every row is kept)."""
    from xcnn.identity import identity_of_values

    try:
        body = json.loads((Path(run_dir) / CONFIG_FILE).read_text(encoding="utf-8"))
        checks = body["config"]["checks"]
        seed = int(checks.get("seed", 0))
        return {str(name): (*identity_of_values(dict(params or {})), seed) for name, params in checks["enabled"]}
    except (OSError, ValueError, RecursionError, TypeError, KeyError, AttributeError):
        return None


def record_fields(records: list[dict[str, Any]], described: descriptions.Described) -> tuple[str, ...]:
    """FIELDS, then each field of the run's metrics and methods that some record holds (a record
    written before a metric existed holds none: its cell stays empty)."""
    present = {k for rec in records for k in rec}
    return FIELDS + tuple(f for f in described.record_fields() if f in present and f not in FIELDS)


def read_checks(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``RUN_DIR/checks.jsonl`` (none if it does not exist), sorted by a key of the
    rows alone. Rows made with other check parameters (steps, seed) stay in the file; filter on
    the ``steps`` and ``seed`` columns to pick one setting."""
    described = descriptions.of_run(run_dir)

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        photo = row["id"]
        photo_key = (0, photo, "") if isinstance(photo, int) else (1, 0, str(photo))
        step = -1 if row["step"] is None else row["step"]
        return (row["CNN"], row["class"], photo_key, row["size"], described.rank(row["method"]),
                _TESTS.get(row["test"], len(_TESTS)), row["test"], str(row.get("steps")),
                str(row.get("seed")), row["measure"], step)

    return sorted(JsonlReader(Path(run_dir) / CHECKS_FILE, key=check_key).read(), key=key)
