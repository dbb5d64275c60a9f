"""Exports of a run's records: exp.json (the thesis's layout) and records.csv (tidy table), and
of its checks (when RUN_DIR/checks.jsonl exists): checks.csv, one row per measured number.

Both are rewritten whole and atomically from ``records.jsonl``, sorted by a key that depends on
the records (and the run's order of methods) alone, so the same records always give
byte-identical files. They hold the methods
(and baselines) the run's current config asks for; records of methods a config asked for before
stay in ``records.jsonl``, and are left out of the exports (see ``current_records``). Methods are
ordered, and baselines known, by the run's own descriptions (``descriptions.of_run``): a plugin's
methods exist only in the process that ran them. records.csv has a column for every record field
of the run's metrics and methods beyond FIELDS, after them.
"""
from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path
from typing import Any

from xcnn.files import write_atomic
from xcnn.runfolder import descriptions
from xcnn.runfolder.layout import CHECKS_CSV, CHECKS_FILE, EXP_FILE, RECORDS_CSV, RECORDS_FILE
from xcnn.runfolder.reading import *  # noqa: F401,F403  (the reading side moved to xcnn.runfolder.reading)
from xcnn.runfolder.reading import CHECK_FIELDS, FIELDS, GROUPS, current_checks, current_records, record_fields

log = logging.getLogger(__name__)


def write_exports(run_dir: str | Path) -> tuple[Path, Path]:
    """Write RUN_DIR/exp.json and RUN_DIR/records.csv (and checks.csv); returns their paths."""
    run_dir = Path(run_dir)
    records, left = current_records(run_dir)
    if left:
        log.info("%d records of methods the config no longer asks for (%s) stay in %s and are left out of the "
                 "exports", sum(left.values()), ", ".join(sorted(left)), run_dir / RECORDS_FILE)
    grouped: dict[str, list[dict[str, Any]]] = {g: [] for g in GROUPS}
    for rec in records:
        grouped.setdefault(rec["group"], []).append({k: _clean(rec.get(k)) for k in FIELDS})
    exp = run_dir / EXP_FILE
    write_atomic(exp, (json.dumps(grouped, indent=1, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"))
    csv = run_dir / RECORDS_CSV
    write_atomic(csv, _csv(records, record_fields(records, descriptions.of_run(run_dir))).encode("utf-8"))
    if (run_dir / CHECKS_FILE).is_file():
        write_atomic(run_dir / CHECKS_CSV, _csv(current_checks(run_dir), CHECK_FIELDS).encode("utf-8"))
    return exp, csv


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _csv(records: list[dict[str, Any]], fields: tuple[str, ...] = FIELDS) -> str:
    import pandas as pd

    frame = pd.DataFrame([{k: r.get(k) for k in fields} for r in records], columns=list(fields))
    for whole in ("step", "steps", "seed"):  # empty cells would make them floats: 3.0
        if whole in frame.columns and fields is CHECK_FIELDS:
            frame[whole] = frame[whole].astype("Int64")
    buf = io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()
