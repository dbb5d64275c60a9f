"""What the page's header says about a run: dataset, photos and records, models and their
Grad-CAM layers, growth, versions, date, run time and the config as written.

Every field is optional: runs of older versions lack some, and a missing field is left out,
never guessed.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xcnn.errors import XcnnError
from xcnn.report import progress
from xcnn.report.tables import cnn_label, is_baseline, method_label, order_methods, order_sizes, size_label
from xcnn.runfolder.jsonl import read_lines
from xcnn.runfolder.layout import CONFIG_FILE, FAILURES_FILE, FILTERED_FILE, RECORDS_FILE

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
    status: list[str] = field(default_factory=list)  # "unfinished: …", "still running: …": shown first
    config_text: str = ""  # config.json's "config" as written, pretty-printed


def read_config(run_dir: Path) -> dict[str, Any]:
    """RUN_DIR/config.json, its types checked once: {} when it is missing or unreadable (a
    warning), one line naming the key when a value has the wrong type (a hand edit or damage)."""
    path = run_dir / CONFIG_FILE
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as err:
        log.warning("%s is unreadable (%s); the report shows no run details from it", path, err)
        return {}
    if not isinstance(body, dict):
        log.warning("%s holds no JSON object; the report shows no run details from it", path)
        return {}
    _check_types(path, body, _BODY_TYPES, "")
    config = body.get("config")
    if isinstance(config, dict):
        _check_types(path, config, _CONFIG_TYPES, "config.")
        for i, spec in enumerate(config.get("models") or []):
            _check_types(path, spec, _MODEL_TYPES, f"config.models[{i}].")
        if isinstance(config.get("checks"), dict):
            _check_types(path, config["checks"], _CHECKS_TYPES, "config.checks.")
    return body


# What each value read from config.json must be (None, or a key left out, means "not said").
_TEXT, _NUMBER, _COUNT, _FLAG = "text", "a finite number ≥ 0", "a whole number ≥ 0", "true or false"
_TABLE, _TABLES, _TEXTS = "an object", "a list of objects", "a list of texts"
_BODY_TYPES = {"config": _TABLE, "registry": _TABLE, "source": _TEXT, "hash": _TEXT, "xcnn": _TEXT, "torch": _TEXT,
               "record_units": _COUNT,
               **{k: _TEXT for k in (*_DATE_KEYS, "finished")}, **{k: _NUMBER for k in _RUN_TIME_KEYS}}
_CONFIG_TYPES = {"demo": _FLAG, "ann_file": _TEXT, "image_dir": _TEXT, "models": _TABLES, "max_target_rank": _COUNT,
                 "growth": _NUMBER, "methods": _TEXTS, "categories": _TEXTS, "sizes": _TEXTS, "checks": _TABLE}
_MODEL_TYPES = {"name": _TEXT, "gradcam_layer": _TEXT, "weights": _TEXT}
_CHECKS_TYPES = {"baselines": _FLAG}


def _is(value: Any, kind: str) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return {
        _TEXT: isinstance(value, str),
        _NUMBER: number and math.isfinite(value) and value >= 0,
        _COUNT: number and isinstance(value, int) and value >= 0,
        _FLAG: isinstance(value, bool),
        _TABLE: isinstance(value, dict),
        _TABLES: isinstance(value, list) and all(isinstance(v, dict) for v in value),
        _TEXTS: isinstance(value, list) and all(isinstance(v, str) for v in value),
    }[kind]


def _check_types(path: Path, mapping: dict[str, Any], kinds: dict[str, str], prefix: str) -> None:
    for key, kind in kinds.items():
        value = mapping.get(key)
        if value is not None and not _is(value, kind):
            shown = repr(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise XcnnError(f"{path}: '{prefix}{key}' is {shown}, not {kind}; the file was edited or damaged - "
                            "restore it, or rerun 'xcnn run' into a new folder")


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
    """Each CNN with the Grad-CAM layer the records name (the one used, field gradcam_layer), else
    the config's ("auto" said in words: the records of this version do not name the layer chosen)."""
    specs = {m.get("name"): m for m in config.get("models") or []}
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
        if layer == "auto":  # the engine chose it; runs that do not record its name cannot say which
            layer = ("chosen automatically: the last 4-D feature map before global pooling; this run's records "
                     "do not name it")
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
            except (ValueError, RecursionError):
                continue
    return max(0, n - n_read)


def run_info(run_dir: Path, df: pd.DataFrame | None, body: dict[str, Any] | None = None,
             left_out: Counter[str] | None = None, from_jsonl: bool = True) -> RunInfo:
    """The header of the report of RUN_DIR: `df` its records (None when it has none), `body` its
    config.json (read here when not given), `left_out` the records of methods the config no longer
    asks for, by method."""
    body = read_config(run_dir) if body is None else body
    config: dict[str, Any] = body["config"] if isinstance(body.get("config"), dict) else {}
    info = RunInfo(run_dir.resolve().name)
    state = progress.banner(run_dir, body, df)
    if state:
        log.warning("%s: %s", run_dir, state)
        info.status.append(state)
    facts = info.facts

    def fact(what: str, value: Any) -> None:
        if value not in (None, ""):
            facts.append((what, str(value)))

    fact("Dataset", _dataset(config))
    if df is not None:
        _record_facts(df, config, fact)
    rank = config.get("max_target_rank")
    if rank is not None:
        n = len(read_lines(run_dir / FILTERED_FILE))
        fact("Target filter", f"only targets in the model's top {rank} (run.max_target_rank): "
                              f"{n} (CNN, size, photo, category) units left out, listed in {FILTERED_FILE}")
    growth = config.get("growth")
    if growth is not None:
        fact("Mask growth", f"dilated until its area grows by {growth:.0%}")
    empty = pd.DataFrame({"method": []})
    xcnn_shown, xcnn_note = _versions(empty if df is None else df, body, "xcnn")
    torch_shown, torch_note = _versions(empty if df is None else df, body, "torch")
    fact("Versions", ", ".join(f"{name} {v}" for name, v in (("xcnn", xcnn_shown), ("torch", torch_shown)) if v))
    date = _first(body, _DATE_KEYS)
    records = run_dir / RECORDS_FILE
    if date is None and records.is_file():
        stamp = dt.datetime.fromtimestamp(records.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        date = f"{stamp} (records last written)"
    fact("Date", date)
    seconds = _first(body, _RUN_TIME_KEYS)
    if seconds is not None:
        fact("Run time", _duration(seconds))
    fact("Config", " · ".join(str(v) for v in (body.get("source"), body.get("hash") and f"hash {body['hash'][:12]}")
                              if v))
    info.notes += [n for n in (xcnn_note, torch_note) if n]
    info.notes += _run_notes(run_dir, df, left_out, from_jsonl)
    if config:
        info.config_text = json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False)
    return info


def _run_notes(run_dir: Path, df: pd.DataFrame | None, left_out: Counter[str] | None, from_jsonl: bool) -> list[str]:
    """What the report leaves out and why: failed units, records of methods the config no longer
    asks for, and lines of records.jsonl its reader did not return."""
    notes: list[str] = []
    records = run_dir / RECORDS_FILE
    failed = progress.failure_reasons(run_dir)
    if failed and df is not None:
        note = (f"{sum(failed.values())} unit(s) failed and have no records ({reasons(failed, 3)}); each is "
                f"listed with its reason in {FAILURES_FILE}.")
        notes.append(note)
    if left_out:
        shown = ", ".join(f"{method_label(m)} ×{n}" for m, n in sorted(left_out.items()))
        note = (f"{sum(left_out.values())} records of methods the config no longer asks for ({shown}) are left out "
                "of this report and of the exports; they stay in records.jsonl.")
        log.info("%s: %s", run_dir, note)
        notes.append(note)
    if from_jsonl and df is not None:
        lost = unread_lines(run_dir, len(df) + sum((left_out or Counter()).values()))
        if lost:
            note = (f"{lost} line(s) of records.jsonl hold records that the store's reader left out (a run "
                    "killed mid-write leaves a few; more means the file was damaged): they are not in this report.")
            log.warning("%s: %s", records, note)
            notes.append(note)
    return notes


def reasons(failed: Counter[str], most: int) -> str:
    """'reason ×n; …' for the most common reasons, and how many other reasons there are."""
    shown = "; ".join(f"{reason} ×{n}" for reason, n in failed.most_common(most))
    rest = len(failed) - most
    return shown + (f"; and {rest} other reason(s)" if rest > 0 else "")


def _record_facts(df: pd.DataFrame, config: dict[str, Any], fact: Callable[[str, Any], None]) -> None:
    base = df["method"].map(is_baseline).to_numpy(dtype=bool)
    finite = np.isfinite(df["P"].to_numpy(dtype=float))
    classes = sorted(set(df["class"]))
    have = {c.strip().lower() for c in classes}
    absent = [c for c in config.get("categories") or () if c.strip().lower() not in have]
    fact("Categories", f"{len(classes)}: {', '.join(classes)}"
         + (f" (the config also asks for {', '.join(absent)}: no records)" if absent else ""))
    n_nan = int((~finite).sum())
    fact("Photos and records", f"{df['id'].nunique()} photos · {len(df)} records"
         + (f" ({n_nan} with P = NaN)" if n_nan else ""))
    methods = order_methods(set(df.loc[~base, "method"]))
    baselines = order_methods(set(df.loc[base, "method"]))
    fact("Methods", ", ".join(method_label(m) for m in methods))
    fact("Baselines", ", ".join(method_label(m) for m in baselines))
    fact("Models", _models(df, config))
    fact("Input sizes", ", ".join(size_label(s) for s in order_sizes(set(df["size"]))))
