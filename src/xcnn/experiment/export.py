"""Exports of a run's records: exp.json (the thesis's layout) and records.csv (tidy table), and
of its checks (when RUN_DIR/checks.jsonl exists): checks.csv, one row per measured number.

Both are rewritten whole and atomically from ``records.jsonl``, sorted by a key that depends on
the records alone, so the same records always give byte-identical files.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

from xcnn.errors import XcnnError
from xcnn.experiment.layout import CHECKS_CSV, CHECKS_FILE, CONFIG_FILE, EXP_FILE, RECORDS_CSV, RECORDS_FILE
from xcnn.experiment.store import JsonlStore, check_key
from xcnn.files import write_atomic
from xcnn.methods.registry import ALL_METHODS, BASELINE_NAMES

# The contract's fields (docs/ARCHITECTURE.md "Records"), then ours.
FIELDS = (
    "id", "file", "class", "method", "CNN", "size", "group", "height", "width",
    "P", "E", "E_celk", "chance", "lift", "pointing_hit", "rma",
    "target", "target_name", "target_rank", "top1", "top1_name", "note",
    "image_png", "mask_png", "map_png",
    "target_prob", "ms", "rectifiers", "completeness", "xcnn", "target_rule",
)
_ORDER = {m: i for i, m in enumerate((*ALL_METHODS, *BASELINE_NAMES))}
GROUPS = ("original", "resized")
CHECK_FIELDS = ("id", "class", "CNN", "size", "method", "test", "step", "measure", "value", "steps", "seed", "xcnn")
_TESTS = {t: i for i, t in enumerate(("deletion", "insertion", "randomisation", "input", "class"))}


def sort_key(rec: dict[str, Any]) -> tuple[Any, ...]:
    method = _ORDER.get(rec["method"], len(_ORDER))
    photo = rec["id"]  # COCO ids are numbers, other formats name photos by path
    photo_key = (0, photo, "") if isinstance(photo, int) else (1, 0, str(photo))
    return (rec["CNN"], rec["class"], photo_key, rec["size"], method, rec["method"])


def read_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``RUN_DIR/records.jsonl``, sorted; NaN fields come back as None.
    A damaged store (an edited file) is refused with one line, as `xcnn run` refuses it."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise XcnnError(f"{run_dir}: no {CONFIG_FILE}; is this a folder made by `xcnn run`?")
    return sorted(JsonlStore(run_dir / RECORDS_FILE).read(), key=sort_key)


def write_exports(run_dir: str | Path) -> tuple[Path, Path]:
    """Write RUN_DIR/exp.json and RUN_DIR/records.csv; returns their paths."""
    run_dir = Path(run_dir)
    records = read_records(run_dir)
    grouped: dict[str, list[dict[str, Any]]] = {g: [] for g in GROUPS}
    for rec in records:
        grouped.setdefault(rec["group"], []).append({k: _clean(rec.get(k)) for k in FIELDS})
    exp = run_dir / EXP_FILE
    write_atomic(exp, (json.dumps(grouped, indent=1, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"))
    csv = run_dir / RECORDS_CSV
    write_atomic(csv, _csv(records).encode("utf-8"))
    if (run_dir / CHECKS_FILE).is_file():
        write_atomic(run_dir / CHECKS_CSV, _csv(read_checks(run_dir), CHECK_FIELDS).encode("utf-8"))
    return exp, csv


def read_checks(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``RUN_DIR/checks.jsonl`` (none if it does not exist), sorted by a key of the
    rows alone. Rows made with other check parameters (steps, seed) stay in the file; filter on
    the ``steps`` and ``seed`` columns to pick one setting."""
    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        photo = row["id"]
        photo_key = (0, photo, "") if isinstance(photo, int) else (1, 0, str(photo))
        step = -1 if row["step"] is None else row["step"]
        return (row["CNN"], row["class"], photo_key, row["size"], _ORDER.get(row["method"], len(_ORDER)),
                row["method"], _TESTS.get(row["test"], len(_TESTS)), row["test"], str(row.get("steps")),
                str(row.get("seed")), row["measure"], step)

    return sorted(JsonlStore(Path(run_dir) / CHECKS_FILE, key=check_key).read(), key=key)


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _csv(records: list[dict[str, Any]], fields: tuple[str, ...] = FIELDS) -> str:
    import pandas as pd

    frame = pd.DataFrame([{k: r.get(k) for k in fields} for r in records], columns=list(fields))
    buf = io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()
