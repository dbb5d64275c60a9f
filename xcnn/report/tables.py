"""Records loader, display names and the summary tables (thesis Table 7.1 and its splits)."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from xcnn.errors import XcnnError
from xcnn.experiment.export import read_records
from xcnn.names import METHOD_LABELS, METHODS
from xcnn.report.stats import bootstrap_ci


# Fixed order and wording everywhere in the report (tables, figures, page).
KEY = ["id", "class", "CNN", "size", "method"]
REQUIRED = KEY + ["P"]
GROUP_LABELS = {"CNN": "CNN", "size": "Size", "class": "Category"}
NAN_CAPTION = (
    "Records whose P is NaN (an all-zero map or a failed record) are counted in the column "
    "'NaN (reason)' and left out of every other column."
)


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method.replace("_", " ").capitalize())


_CNN_NAMES = {
    "alexnet": "AlexNet", "googlenet": "GoogLeNet", "inception_v3": "Inception v3",
    "mobilenet_v2": "MobileNetV2", "mobilenet_v3_large": "MobileNetV3-Large",
    "mobilenet_v3_small": "MobileNetV3-Small", "squeezenet1_0": "SqueezeNet 1.0", "squeezenet1_1": "SqueezeNet 1.1",
}
_CNN_FAMILIES = {"resnet": "ResNet-", "vgg": "VGG-", "densenet": "DenseNet-", "resnext": "ResNeXt-",
                 "wide_resnet": "Wide ResNet-", "efficientnet_lite": "EfficientNet-Lite", "efficientnet_b": "EfficientNet-B"}


def cnn_label(name: str) -> str:
    """torchvision-style model names in words (resnet18 -> ResNet-18); unknown names unchanged."""
    if name in _CNN_NAMES:
        return _CNN_NAMES[name]
    match = re.fullmatch(r"([a-z_]+?)(\d+)(_bn)?", name)
    if match and match.group(1) in _CNN_FAMILIES:
        return _CNN_FAMILIES[match.group(1)] + match.group(2) + (" BN" if match.group(3) else "")
    return name


def size_label(size: str) -> str:
    if size == "original":
        return "Original size"
    if size.isdigit():
        return f"{size}×{size} px"
    return f"{size.replace('x', '×')} px"


def _size_key(size: str) -> tuple[int, int, str]:
    if size == "original":
        return (0, 0, size)
    head = size.split("x")[0]
    return (1, int(head), size) if head.isdigit() else (2, 0, size)


def order_methods(methods: list[str] | set[str]) -> list[str]:
    """Known methods in the fixed order, any unknown ones after them alphabetically."""
    present = set(methods)
    return [m for m in METHODS if m in present] + sorted(present - set(METHODS))


def order_sizes(sizes: list[str] | set[str]) -> list[str]:
    return sorted(set(sizes), key=_size_key)


def load_records(run_dir: Path) -> pd.DataFrame:
    """Records of a run as a DataFrame (records.jsonl preferred, records.csv as fallback)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise XcnnError(f"run folder {run_dir} does not exist; give the folder that 'xcnn run' wrote")
    jsonl, csv = run_dir / "records.jsonl", run_dir / "records.csv"
    if jsonl.is_file():
        source = jsonl
        # The store's own reader: whole units only, a torn tail left out, a damaged file refused.
        df = pd.DataFrame(read_records(run_dir))
    elif csv.is_file():
        source = csv
        try:
            df = pd.read_csv(csv, keep_default_na=True, dtype={"size": str, "note": str})
        except pd.errors.EmptyDataError:
            df = pd.DataFrame()
        except (pd.errors.ParserError, UnicodeDecodeError) as err:
            raise XcnnError(f"{csv} cannot be read as CSV ({str(err).splitlines()[0]}); re-export it") from None
    else:
        raise XcnnError(f"no records.jsonl or records.csv in {run_dir}; run 'xcnn run' into that folder first")
    if df.empty:
        raise XcnnError(f"{source} holds no records; run 'xcnn run' into {run_dir} first")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise XcnnError(f"{source} lacks the column(s) {', '.join(missing)}; it was not written by 'xcnn run'")
    return _clean(df, source)


def _clean(df: pd.DataFrame, source: Path) -> pd.DataFrame:
    df = df.copy()
    for col in ("class", "method", "CNN", "size"):
        df[col] = df[col].astype(str)
    ids = pd.to_numeric(df["id"], errors="coerce")
    if ids.isna().any():
        raise XcnnError(f"{source} has a record whose id is not a number; it was not written by 'xcnn run'")
    df["id"] = ids.astype(np.int64)
    for col in ("P", "E", "E_celk", "chance", "lift", "rma"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    if "chance" not in df.columns:
        df["chance"] = np.nan
    if "lift" not in df.columns:
        with np.errstate(divide="ignore", invalid="ignore"):
            df["lift"] = df["P"] / df["chance"]
    # pointing_hit is a JSON bool (or null), and "True"/"False"/"" once it went through CSV.
    hits = df["pointing_hit"] if "pointing_hit" in df.columns else pd.Series(np.nan, index=df.index)
    df["pointing_hit"] = hits.map({True: 1.0, False: 0.0, "True": 1.0, "False": 0.0}).astype(float)
    if "rma" not in df.columns:
        df["rma"] = np.nan
    df["note"] = df["note"].fillna("").astype(str) if "note" in df.columns else ""
    for col in ("image_png", "mask_png", "map_png"):
        df[col] = df[col].fillna("").astype(str) if col in df.columns else ""
    return df.reset_index(drop=True)


def _nan_cell(notes: pd.Series) -> str:
    if notes.empty:
        return "0"
    reasons = notes.replace("", "no reason given").value_counts()
    text = "; ".join(f"{reason} ×{count}" for reason, count in reasons.items())
    return f"{len(notes)} ({text})"


def _mean_finite(values: pd.Series) -> float:
    v = values.to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else math.nan


def _summarise(group: pd.DataFrame, seed: int, n_resamples: int) -> dict:
    valid = group[np.isfinite(group["P"].to_numpy())]
    p = valid["P"].to_numpy(dtype=float)
    lo, hi = bootstrap_ci(p, n_resamples=n_resamples, seed=seed)
    chance = valid["chance"].to_numpy(dtype=float)
    lift = valid["lift"].to_numpy(dtype=float)
    lift = lift[np.isfinite(lift)]
    chance = chance[np.isfinite(chance)]
    return {
        "Records": len(p),
        "Sum of P": float(p.sum()) if len(p) else math.nan,
        "Mean P": float(p.mean()) if len(p) else math.nan,
        "Median P": float(np.median(p)) if len(p) else math.nan,
        "95 % CI low": lo,
        "95 % CI high": hi,
        "Mean chance": float(chance.mean()) if len(chance) else math.nan,
        "Mean lift": float(lift.mean()) if len(lift) else math.nan,
        "Pointing (%)": _mean_finite(valid["pointing_hit"]) * 100,
        "RMA": _mean_finite(valid["rma"]),
        "NaN (reason)": _nan_cell(group.loc[~np.isfinite(group["P"].to_numpy()), "note"]),
    }


def summary_table(
    df: pd.DataFrame, by: str | None = None, seed: int = 0, n_resamples: int = 2000
) -> pd.DataFrame:
    """Per method (and per value of `by`): records, sum, mean, median, bootstrap CI, chance, lift.

    Keeps the internal names in columns `method` (and `by`) for figures; `table_for_display`
    turns them into words.
    """
    keys = ["method"] if by is None else [by, "method"]
    rows = []
    for values, group in df.groupby(keys, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        rows.append({**dict(zip(keys, values)), **_summarise(group, seed, n_resamples)})
    out = pd.DataFrame(rows)
    method_rank = {m: i for i, m in enumerate(order_methods(set(out["method"])))}
    sort_cols = ["_m"]
    out["_m"] = out["method"].map(method_rank)
    if by is not None:
        levels = order_sizes(set(out[by])) if by == "size" else sorted(set(out[by]))
        out["_g"] = out[by].map({v: i for i, v in enumerate(levels)})
        sort_cols = ["_g", "_m"]
    return out.sort_values(sort_cols).drop(columns=[c for c in ("_m", "_g") if c in out]).reset_index(drop=True)


def summaries(df: pd.DataFrame, seed: int = 0, n_resamples: int = 2000) -> dict[str, pd.DataFrame]:
    """The summary tables the report uses: per method, per CNN, per size, per category, per CNN and size."""
    out = {key: summary_table(df, by=None if key == "method" else key, seed=seed, n_resamples=n_resamples)
           for key in ("method", "CNN", "size", "class")}
    per_size = [summary_table(df[df["size"] == size], by="CNN", seed=seed, n_resamples=n_resamples).assign(size=size)
                for size in order_sizes(set(df["size"]))]
    out["CNN_size"] = pd.concat(per_size, ignore_index=True)
    return out


def table_for_display(table: pd.DataFrame) -> pd.DataFrame:
    """Words instead of internal names, for CSV/Markdown/HTML."""
    out = table.copy()
    out["method"] = out["method"].map(method_label)
    if "size" in out.columns:
        out["size"] = out["size"].map(size_label)
    if "CNN" in out.columns:
        out["CNN"] = out["CNN"].map(cnn_label)
    return out.rename(columns={"method": "Method", **GROUP_LABELS})


def _fmt(value: object, column: str) -> str:
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return "–"
        if column == "Sum of P":
            return f"{value:.2f}"
        if column.endswith("(%)"):
            return f"{value:.1f}"
        if "p" in column.split() and value < 0.001:  # p-values: keep tiny ones readable
            return f"{value:.1e}"
        return f"{value:.3f}"
    return str(value)


def format_cells(table: pd.DataFrame) -> list[list[str]]:
    return [[_fmt(v, c) for v, c in zip(row, table.columns)] for row in table.itertuples(index=False)]


def to_markdown(table: pd.DataFrame, caption: str = "") -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    head = "| " + " | ".join(esc(str(c)) for c in table.columns) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(table[c]) else "---" for c in table.columns) + "|"
    body = ["| " + " | ".join(esc(v) for v in row) + " |" for row in format_cells(table)]
    text = "\n".join([head, rule, *body]) + "\n"
    return f"{text}\n{caption}\n" if caption else text


def write_table(table: pd.DataFrame, out_dir: Path, name: str, caption: str) -> dict[str, Path]:
    """`name`.csv (full precision) and `name`.md (rounded, with caption)."""
    csv_path, md_path = out_dir / f"{name}.csv", out_dir / f"{name}.md"
    table.to_csv(csv_path, index=False, float_format="%.10g")
    md_path.write_text(to_markdown(table, caption), encoding="utf-8")
    return {"csv": csv_path, "md": md_path}


def paired_for_display(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    out["method A"] = out["method A"].map(method_label)
    out["method B"] = out["method B"].map(method_label)
    out["A wins"] = 100.0 * out["A wins"]
    return out.rename(columns={"method A": "Method A", "method B": "Method B", "A wins": "A wins (%)"})
