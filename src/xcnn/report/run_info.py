"""What the page's header says about a run: dataset, photos and records, models and their
Grad-CAM layers, growth, versions, date, run time and the config as written.

Every field is optional: runs of older versions lack some, and a missing field is left out,
never guessed.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xcnn.experiment.layout import CONFIG_FILE, FILTERED_FILE, RECORDS_FILE
from xcnn.report.tables import cnn_label, is_baseline, method_label, order_methods, order_sizes, size_label

log = logging.getLogger(__name__)

# config.json keys and record fields that newer runs may add; the first one present is shown.
_DATE_KEYS = ("created", "started", "date")
_RUN_TIME_KEYS = ("run_seconds", "elapsed_s", "wall_s")
_LAYER_FIELDS = ("layer", "gradcam_layer")


@dataclass
class RunInfo:
    name: str
    facts: list[tuple[str, str]] = field(default_factory=list)  # (what, value) for the header
    notes: list[str] = field(default_factory=list)  # warnings the reader must see
    config_text: str = ""  # config.json's "config" as written, pretty-printed


def _config_file(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG_FILE
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log.warning("%s is unreadable (%s); the report shows no run details from it", path, err)
        return {}
    return body if isinstance(body, dict) else {}


def _first(mapping: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((mapping[k] for k in keys if mapping.get(k) not in (None, "")), None)


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(round(seconds)), 60)
    h, m = divmod(minutes, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s" if m else f"{s} s"


def _dataset(config: dict[str, Any]) -> str | None:
    if config.get("demo"):
        return "the offline demo set"
    parts = [f"{key} {Path(str(config[key])).name}" for key in ("ann_file", "image_dir") if config.get(key)]
    return ", ".join(parts) or None


def _models(df: pd.DataFrame, config: dict[str, Any]) -> str | None:
    """Each CNN with the Grad-CAM layer the records name (the one used), else the config's."""
    specs = {m.get("name"): m for m in config.get("models", []) if isinstance(m, dict)}
    cnns = sorted(set(df.loc[~df["method"].map(is_baseline), "CNN"]))
    parts = []
    for cnn in cnns:
        layer = None
        rows = df[df["CNN"] == cnn]
        for col in _LAYER_FIELDS:
            if col in rows.columns:
                named = rows[col].dropna().astype(str)
                named = named[named != ""]
                if len(named):
                    layer = ", ".join(sorted(set(named)))
                    break
        layer = layer or specs.get(cnn, {}).get("gradcam_layer")
        weights = specs.get(cnn, {}).get("weights")
        text = cnn_label(cnn) + (f" (Grad-CAM layer {layer})" if layer else "")
        parts.append(text + (f", weights {Path(str(weights)).name}" if weights else ""))
    return "; ".join(parts) or None


def _versions(df: pd.DataFrame, body: dict[str, Any], field_name: str) -> tuple[str | None, str | None]:
    """(what to show, a note if records of several versions are mixed)."""
    counts = Counter(v for v in df[field_name].astype(str) if v) if field_name in df.columns else Counter()
    if not counts:
        value = body.get(field_name)
        return (str(value) if value else None), None
    shown = ", ".join(f"{v} ({n} records)" for v, n in sorted(counts.items())) if len(counts) > 1 else next(iter(counts))
    unknown = int((df[field_name].astype(str) == "").sum())
    if len(counts) > 1 or unknown:
        extra = f" and {unknown} records that do not say" if unknown else ""
        return shown, (f"The records come from several {field_name} versions: {shown}{extra}. "
                       "Numbers may have changed between versions; compare with care.")
    return shown, None


def unread_lines(run_dir: Path, n_read: int) -> int:
    """Lines of records.jsonl that hold a record but were not returned by the store's reader
    (a torn last write after a killed run is expected; anything more is damage)."""
    path = run_dir / RECORDS_FILE
    if not path.is_file():
        return 0
    n = 0
    with open(path, "rb") as f:
        for raw in f:
            try:
                n += isinstance(json.loads(raw), dict)
            except ValueError:
                continue
    return max(0, n - n_read)


def run_info(run_dir: Path, df: pd.DataFrame, from_jsonl: bool) -> RunInfo:
    body = _config_file(run_dir)
    config: dict[str, Any] = body["config"] if isinstance(body.get("config"), dict) else {}
    info = RunInfo(run_dir.resolve().name)
    facts = info.facts

    def fact(what: str, value: Any) -> None:
        if value not in (None, ""):
            facts.append((what, str(value)))

    base = df["method"].map(is_baseline).to_numpy(dtype=bool)
    finite = np.isfinite(df["P"].to_numpy(dtype=float))
    fact("Dataset", _dataset(config))
    classes = sorted(set(df["class"]))
    fact("Categories", f"{len(classes)}: {', '.join(classes)}")
    n_nan = int((~finite).sum())
    fact("Photos and records", f"{df['id'].nunique()} photos · {len(df)} records"
         + (f" ({n_nan} with P = NaN)" if n_nan else ""))
    methods = order_methods(set(df.loc[~base, "method"]))
    baselines = order_methods(set(df.loc[base, "method"]))
    fact("Methods", ", ".join(method_label(m) for m in methods))
    fact("Baselines", ", ".join(method_label(m) for m in baselines))
    fact("Models", _models(df, config))
    fact("Input sizes", ", ".join(size_label(s) for s in order_sizes(set(df["size"]))))
    rank = config.get("max_target_rank")
    if isinstance(rank, int) and not isinstance(rank, bool):
        filtered = run_dir / FILTERED_FILE
        n = sum(1 for line in filtered.open(encoding="utf-8") if line.strip()) if filtered.is_file() else 0
        fact("Target filter", f"only targets in the model's top {rank} (run.max_target_rank): "
                              f"{n} (CNN, size, photo, category) units left out, listed in {FILTERED_FILE}")
    growth = config.get("growth")
    if isinstance(growth, (int, float)):
        fact("Mask growth", f"dilated until its area grows by {growth:.0%}")
    xcnn_shown, xcnn_note = _versions(df, body, "xcnn")
    torch_shown, torch_note = _versions(df, body, "torch")
    fact("Versions", ", ".join(f"{name} {v}" for name, v in (("xcnn", xcnn_shown), ("torch", torch_shown)) if v))
    date = _first(body, _DATE_KEYS)
    records = run_dir / RECORDS_FILE
    if date is None and records.is_file():
        stamp = dt.datetime.fromtimestamp(records.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        date = f"{stamp} (records last written)"
    fact("Date", date)
    seconds = _first(body, _RUN_TIME_KEYS)
    if isinstance(seconds, (int, float)):
        fact("Run time", _duration(seconds))
    fact("Config", " · ".join(str(v) for v in (body.get("source"), body.get("hash") and f"hash {body['hash'][:12]}")
                              if v))
    info.notes += [n for n in (xcnn_note, torch_note) if n]
    if from_jsonl:
        lost = unread_lines(run_dir, len(df))
        if lost:
            note = (f"{lost} line(s) of records.jsonl hold records that the store's reader left out (a run "
                    "killed mid-write leaves a few; more means the file was damaged): they are not in this report.")
            log.warning("%s: %s", records, note)
            info.notes.append(note)
    if config:
        info.config_text = json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False)
    return info
