"""Loading a run's records for the report (records.jsonl preferred, records.csv as fallback),
and its views: all records, and those whose target is in the model's top 5.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xcnn.errors import XcnnError
from xcnn.report.labels import BASE_KEY, CARD_FIELDS, REQUIRED, TOP_K, described, is_baseline
from xcnn.runfolder.layout import RECORDS_CSV, RECORDS_FILE
from xcnn.runfolder.reading import current_records


def load_records(run_dir: Path) -> pd.DataFrame:
    """Records of a run as a DataFrame (records.jsonl preferred, records.csv as fallback); only
    the methods the run's config asks for (see load_run)."""
    df, left = load_run(run_dir)
    if df is None:
        raise no_records(run_dir, left)
    return df


def load_run(run_dir: Path) -> tuple[pd.DataFrame | None, Counter[str]]:
    """(the records as a DataFrame, or None when the run holds none; the records of records.jsonl
    left out because their method is no longer in the config, counted by method)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise XcnnError(f"run folder {run_dir} does not exist; give the folder that 'xcnn run' wrote")
    jsonl, csv = run_dir / RECORDS_FILE, run_dir / RECORDS_CSV
    left: Counter[str] = Counter()
    if jsonl.is_file():
        source = jsonl
        # The store's own reader: whole write groups only, a torn tail left out, damage refused.
        records, left = current_records(run_dir)
        df = pd.DataFrame(records)
    elif csv.is_file():
        source = csv
        try:
            df = pd.read_csv(csv, keep_default_na=True, dtype={"size": str, "note": str, "xcnn": str})
        except pd.errors.EmptyDataError:
            df = pd.DataFrame()
        except (pd.errors.ParserError, UnicodeDecodeError) as err:
            raise XcnnError(f"{csv} cannot be read as CSV ({str(err).splitlines()[0]}); re-export it") from None
    else:
        raise XcnnError(f"no {RECORDS_FILE} or {RECORDS_CSV} in {run_dir}; run 'xcnn run' into that folder first")
    if df.empty:
        return None, left
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise XcnnError(f"{source} lacks the column(s) {', '.join(missing)}; it was not written by 'xcnn run'")
    return _clean(df, source), left


def no_records(run_dir: Path, left: Counter[str]) -> XcnnError:
    """The error of a run with no record to show."""
    source = run_dir / (RECORDS_FILE if (run_dir / RECORDS_FILE).is_file() else RECORDS_CSV)
    if left:
        return XcnnError(f"{source} holds no records of the methods config.json asks for (only "
                         f"{', '.join(sorted(left))}); rerun 'xcnn run' with the config into {run_dir}")
    return XcnnError(f"{source} holds no records; run 'xcnn run' into {run_dir} first")


def _clean(df: pd.DataFrame, source: Path) -> pd.DataFrame:
    df = df.copy()
    if df["id"].isna().any():
        raise XcnnError(f"{source} has a record without an id; it was not written by 'xcnn run'")
    ids = pd.to_numeric(df["id"], errors="coerce")
    # COCO ids are numbers; other formats name photos by path, and then every id stays text.
    df["id"] = ids.astype(np.int64) if ids.notna().all() else df["id"].astype(str)
    for col in ("class", "method", "CNN", "size"):
        df[col] = df[col].astype(str)
    for col in ("P", "E", "E_celk", "chance", "lift", "rma", "target_rank", "target_prob", *CARD_FIELDS):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    for metric in described().plugin_metrics():  # a plugin's values: numbers or flags, null before it existed
        if metric.name in df.columns:
            df[metric.name] = df[metric.name].map(_number).astype(float)
    for col in ("chance", "rma", "target_rank", "target_prob"):
        if col not in df.columns:
            df[col] = np.nan
    if "lift" not in df.columns:
        with np.errstate(divide="ignore", invalid="ignore"):
            df["lift"] = df["P"] / df["chance"]
    # pointing_hit is a JSON bool (or null), and "True"/"False"/"" once it went through CSV.
    hits = df["pointing_hit"] if "pointing_hit" in df.columns else pd.Series(np.nan, index=df.index)
    df["pointing_hit"] = hits.map({True: 1.0, False: 0.0, "True": 1.0, "False": 0.0}).astype(float)
    for col in ("note", "image_png", "mask_png", "map_png", "target_name", "xcnn"):
        df[col] = df[col].fillna("").astype(str) if col in df.columns else ""
    return df.reset_index(drop=True)


def _number(value: Any) -> float:
    """A plugin metric's value as a number: flags as 1 / 0 (also as CSV text), anything else NaN."""
    if isinstance(value, str):
        value = {"True": 1.0, "False": 0.0}.get(value, value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# --- views --------------------------------------------------------------------------------------

def _baseline_rows(df: pd.DataFrame) -> np.ndarray:
    return df["method"].map(is_baseline).to_numpy(dtype=bool)


def _covered_baselines(df: pd.DataFrame) -> pd.DataFrame:
    """Method records, plus the baseline records of the (photo, category, size) they cover:
    a baseline is compared on the data the methods were scored on, no more."""
    base = _baseline_rows(df)
    methods, baselines = df[~base], df[base]
    if methods.empty or baselines.empty:
        return df
    keys = methods[BASE_KEY].drop_duplicates()
    return pd.concat([methods, baselines.merge(keys, on=BASE_KEY)], ignore_index=True)


def views(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """"all" and, where it differs, "top5": records whose target the model ranks 1..5.

    Baselines have no target: they follow the methods' records (same photo, category, size).
    """
    out = {"all": _covered_baselines(df)}
    base = _baseline_rows(df)
    ranks = df["target_rank"].to_numpy(dtype=float)
    in_top = base | (ranks <= TOP_K)
    if not in_top.all() and in_top[~base].any():
        out["top5"] = _covered_baselines(df[in_top])
    return out


def views_note(df: pd.DataFrame) -> str:
    """Why the top-5 view is missing, in one sentence ("" when it is shown)."""
    ranks = df.loc[~_baseline_rows(df), "target_rank"].to_numpy(dtype=float)
    if np.isnan(ranks).all():
        return "The records do not say where the model ranks its target (field target_rank): all records only."
    if (ranks <= TOP_K).all():
        return f"Every record's target is in the model's top {TOP_K}: that view equals all records."
    if not (ranks <= TOP_K).any():
        return f"No record's target is in the model's top {TOP_K}: all records only."
    return ""


def matched(df: pd.DataFrame) -> pd.DataFrame:
    """Baseline records copied to every CNN whose method records share their (photo, category,
    size), so that per-CNN tables and paired tests see a baseline on exactly a method's records."""
    base = _baseline_rows(df)
    methods, baselines = df[~base], df[base]
    if methods.empty or baselines.empty:
        return df
    keys = methods[[*BASE_KEY, "CNN"]].drop_duplicates()
    copies = baselines.drop(columns="CNN").merge(keys, on=BASE_KEY)
    return pd.concat([methods, copies[df.columns]], ignore_index=True)


def best_baseline(df: pd.DataFrame) -> str | None:
    """The baseline with the highest mean P on these records (None without baselines)."""
    base = df[_baseline_rows(df)]
    means = base[np.isfinite(base["P"].to_numpy())].groupby("method")["P"].mean()
    return str(means.idxmax()) if len(means) else None


# --- summaries ----------------------------------------------------------------------------------
