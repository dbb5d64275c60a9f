"""Exports of a run's records: exp.json (the thesis's layout) and records.csv (tidy table).

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
from xcnn.names import METHODS
from xcnn.experiment.store import JsonlStore, write_atomic

# The contract's fields (docs/ARCHITECTURE.md "Records"), then ours.
FIELDS = (
    "id", "file", "class", "method", "CNN", "size", "group", "height", "width",
    "P", "E", "E_celk", "chance", "lift", "pointing_hit", "rma",
    "target", "target_name", "target_rank", "top1", "top1_name", "note",
    "image_png", "mask_png", "map_png",
    "target_prob",
)
GROUPS = ("original", "resized")


def sort_key(rec: dict[str, Any]) -> tuple[Any, ...]:
    method = METHODS.index(rec["method"]) if rec["method"] in METHODS else len(METHODS)
    return (rec["CNN"], rec["class"], int(rec["id"]), rec["size"], method, rec["method"])


def read_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """The whole units of ``RUN_DIR/records.jsonl``, sorted; NaN fields come back as None."""
    run_dir = Path(run_dir)
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["config"]
        per_unit = len(config["methods"])
    except (OSError, ValueError, KeyError, TypeError):
        raise XcnnError(f"{run_dir}: no readable config.json; is this a folder made by `xcnn run`?") from None
    return sorted(JsonlStore(run_dir / "records.jsonl", per_unit).read(), key=sort_key)


def write_exports(run_dir: str | Path) -> tuple[Path, Path]:
    """Write RUN_DIR/exp.json and RUN_DIR/records.csv; returns their paths."""
    run_dir = Path(run_dir)
    records = read_records(run_dir)
    grouped: dict[str, list[dict[str, Any]]] = {g: [] for g in GROUPS}
    for rec in records:
        grouped.setdefault(rec["group"], []).append({k: _clean(rec.get(k)) for k in FIELDS})
    exp = run_dir / "exp.json"
    write_atomic(exp, (json.dumps(grouped, indent=1, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"))
    csv = run_dir / "records.csv"
    write_atomic(csv, _csv(records).encode("utf-8"))
    return exp, csv


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _csv(records: list[dict[str, Any]]) -> str:
    import pandas as pd

    frame = pd.DataFrame([{k: r.get(k) for k in FIELDS} for r in records], columns=list(FIELDS))
    buf = io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()
