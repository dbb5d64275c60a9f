"""Records loader, display names, views (all / target in top 5) and the summary tables.

Methods' words, order and pictures, and the metrics beyond 0.2's, come from the descriptions of
the run being reported (``describing``; 0.2's built-ins otherwise), never from the registry: it
imports torch, and knows only the plugins of this process.
"""
from __future__ import annotations

import html
import math
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xcnn.errors import XcnnError
from xcnn.runfolder import descriptions
from xcnn.runfolder.descriptions import Described, MetricInfo, ScoreInfo
from xcnn.runfolder.reading import current_records
from xcnn.runfolder.layout import RECORDS_CSV, RECORDS_FILE
from xcnn.report import categories
from xcnn.report.categories import Scored
from xcnn.report.stats import cluster_bootstrap_ci, cluster_bootstrap_cis, versus_baseline

KEY = ["id", "class", "CNN", "size", "method"]
REQUIRED = KEY + ["P"]
# A baseline is model-free: one record per (photo, category, size), whatever the CNNs.
BASE_KEY = ["id", "class", "size"]
GROUP_LABELS = {"CNN": "CNN", "size": "Size", "class": "Category"}
TOP_K = 5
VIEWS = {"all": "All records", "top5": f"Target in top {TOP_K}"}
NAN_CAPTION = (
    "Records whose P is NaN (an all-zero map or a failed record) are counted in the column "
    "'NaN (reason)' and left out of every other column."
)
# The work whose experiment the report reproduces, named in full wherever a table or figure
# number of it is given (as README.md names it).
THESIS = ('the thesis "Explainable Convolutional Neural Networks" (master\'s thesis, Brno University of '
          "Technology, 2021)")


def thesis(where: str) -> str:
    """'Table 7.1 of the thesis "…" (…)': a table or figure of the thesis, cited."""
    return f"{where} of {THESIS}"


# Optional per-record measurements, shown per method in the method card when records carry them.
CARD_FIELDS = {
    "deletion_auc": "Deletion AUC (lower is better)",
    "insertion_auc": "Insertion AUC (higher is better)",
    "ms": "ms per map",
}


# --- names --------------------------------------------------------------------------------------

_DESCRIBED: ContextVar[Described | None] = ContextVar("described", default=None)


@contextmanager
def describing(run: Described) -> Iterator[Described]:
    """Report with these descriptions (a run's config.json "registry") inside the block."""
    token = _DESCRIBED.set(run)
    try:
        yield run
    finally:
        _DESCRIBED.reset(token)


def described() -> Described:
    """The descriptions of the run being reported; 0.2's built-ins outside ``describing``."""
    return _DESCRIBED.get() or descriptions.builtin()


def method_label(method: str) -> str:
    return described().label(method)


def is_baseline(method: str) -> bool:
    return described().is_baseline(method)


def order_methods(methods: list[str] | set[str]) -> list[str]:
    """Registry order: methods, then baselines, then unknown names (sorted)."""
    return described().order(methods)


def draw_of(method: str) -> str:
    """"grey" or "heat": how the run pictured the method's maps ("grey" for unknown methods)."""
    return described().method(method).draw


def metric_column(metric: MetricInfo) -> str:
    """The table column of a metric beyond 0.2's: "Mean <label>", ↑ / ↓ as its score direction
    (and its name, should its label repeat a column of 0.2's)."""
    column = f"Mean {metric.label} {metric.arrow}".strip()
    return f"{column} ({metric.name})" if column in _TAKEN else column


def shown_metrics(df: pd.DataFrame) -> list[MetricInfo]:
    """The metrics beyond 0.2's five that some record of ``df`` holds a finite value of."""
    return [m for m in described().plugin_metrics()
            if m.name in df.columns and np.isfinite(df[m.name].to_numpy(dtype=float)).any()]


def metrics_caption(columns: list[str]) -> str:
    """What the shown metric columns are: the metric, its paper, its direction."""
    words = {True: "higher is better", False: "lower is better", None: "a description, neither better nor worse"}
    return " ".join(f"{metric_column(m)}: the mean of the per-map metric {m.name} ("
                    + (f"{m.paper}; " if m.paper else "") + f"{words[m.higher_is_better]}) over the records with "
                    "a finite value."
                    for m in described().plugin_metrics() if metric_column(m) in columns)


_CNN_NAMES = {
    "alexnet": "AlexNet", "googlenet": "GoogLeNet", "inception_v3": "Inception v3",
    "mobilenet_v2": "MobileNetV2", "mobilenet_v3_large": "MobileNetV3-Large",
    "mobilenet_v3_small": "MobileNetV3-Small", "squeezenet1_0": "SqueezeNet 1.0", "squeezenet1_1": "SqueezeNet 1.1",
    "none": "no CNN",
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


def order_sizes(sizes: list[str] | set[str]) -> list[str]:
    return sorted(set(sizes), key=_size_key)


def order_ids(ids: pd.Series) -> list:
    """Distinct photo ids, numbers numerically (ids are ints for COCO, text for other formats)."""
    return sorted(set(ids), key=lambda v: (0, v, "") if isinstance(v, (int, np.integer)) else (1, 0, str(v)))


# --- loading ------------------------------------------------------------------------------------

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


def _summarise(group: pd.DataFrame, seed: int, n_resamples: int, metrics: list[MetricInfo]) -> dict:
    valid = group[np.isfinite(group["P"].to_numpy())]
    p = valid["P"].to_numpy(dtype=float)
    lo, hi = cluster_bootstrap_ci(p, valid["id"].to_numpy(), n_resamples=n_resamples, seed=seed)
    return {
        "Records": len(p),
        "Photos": valid["id"].nunique(),
        "Sum of P": float(p.sum()) if len(p) else math.nan,
        "Mean P": float(p.mean()) if len(p) else math.nan,
        "Median P": float(np.median(p)) if len(p) else math.nan,
        "95 % CI low": lo,
        "95 % CI high": hi,
        "Mean chance": _mean_finite(valid["chance"]),
        "Mean lift": _mean_finite(valid["lift"]),
        "Pointing (%)": _mean_finite(valid["pointing_hit"]) * 100,
        "RMA": _mean_finite(valid["rma"]),
        **{metric_column(m): _mean_finite(valid[m.name]) for m in metrics},
        "NaN (reason)": _nan_cell(group.loc[~np.isfinite(group["P"].to_numpy()), "note"]),
    }


def _level_order(column: str, values: set) -> list:
    if column == "size":
        return order_sizes(values)
    return sorted(values)


def summary_table(
    df: pd.DataFrame, by: str | list[str] | None = None, seed: int = 0, n_resamples: int = 2000
) -> pd.DataFrame:
    """Per method (and per value of the `by` column(s)): records, photos, sum, mean, median,
    cluster-bootstrap interval over photos, chance, lift, pointing game, RMA, the mean of each
    metric beyond these that the records hold (``shown_metrics``), NaN count.

    Keeps the internal names in columns `method` (and `by`) for figures; `table_for_display`
    turns them into words. Split by CNN, baselines appear under every CNN (see `matched`).
    """
    groups = [] if by is None else [by] if isinstance(by, str) else list(by)
    if "CNN" in groups:
        df = matched(df)
    keys = [*groups, "method"]
    metrics = shown_metrics(df)
    rows = []
    for values, group in df.groupby(keys, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        rows.append({**dict(zip(keys, values)), **_summarise(group, seed, n_resamples, metrics)})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    ranks = {col: {v: i for i, v in enumerate(_level_order(col, set(out[col])))} for col in groups}
    ranks["method"] = {m: i for i, m in enumerate(order_methods(set(out["method"])))}
    sort_cols = [f"_{col}" for col in keys]
    for col in keys:
        out[f"_{col}"] = out[col].map(ranks[col])
    return out.sort_values(sort_cols).drop(columns=sort_cols).reset_index(drop=True)


SPLITS = {"method": None, "CNN": "CNN", "size": "size", "class": "class", "CNN_size": ["size", "CNN"]}


def summaries(df: pd.DataFrame, seed: int = 0, n_resamples: int = 2000) -> dict[str, pd.DataFrame]:
    """The summary tables of one view: per method, per CNN, per size, per category, per size and CNN."""
    return {key: summary_table(df, by=by, seed=seed, n_resamples=n_resamples) for key, by in SPLITS.items()}


# Plain-words flags of the method card, and the thresholds the page states.
FLAG_INPUT = 0.9  # input dependence (Spearman) at or above: the map does not depend on the photo
FLAG_RANDOM = 0.5  # similarity after full randomisation at or above: insensitive to the weights
# The card's caption explains only what the card shows: a check the run did not make, or a flag
# it cannot raise, is not described.
_CHECK_WORDS = {
    "Deletion AUC (lower is better)": "Deletion / insertion: pixels are removed from the photo (or put back into a "
    "blurred copy) in the map's order, and the area under the target's probability is taken; a faithful map makes "
    "deletion fall fast and insertion rise fast.",
    "Similarity after full randomisation": "Randomisation: the model's layers are re-initialised from the output "
    "down and the map recomputed; a map that stays similar does not reflect what the model learnt.",
    "Input dependence": "Input dependence: the map of another photo explained for the same class; near 1, the map "
    "ignores the photo.",
    "Class dependence": "Class dependence: the same photo explained for another class; near 1, the map ignores the "
    "class (expected of Guided Backprop and Eigen-CAM).",
}
_SIMILARITIES = ("Similarity after full randomisation", "Input dependence", "Class dependence")


def flags_caption(columns: list[str], edges: bool) -> str:
    """What the card's flags and check columns mean, for the columns it has (`edges`: the run has
    the edges baseline, the yardstick of the third flag)."""
    flags = []
    if "Input dependence" in columns:
        flags.append(f"input dependence ≥ {FLAG_INPUT} \"does not depend on the photo\"")
    if "Similarity after full randomisation" in columns:
        flags.append(f"similarity after full model randomisation ≥ {FLAG_RANDOM} \"insensitive to the model's "
                     "weights\"")
    if edges:
        flags.append("mean P not above the edges baseline's \"no better than an edge detector\"")
    parts = [f"Flags: {'; '.join(flags)}." if flags else ""]
    if any(c in columns for c in _SIMILARITIES):
        parts.append("Similarities are Spearman correlations of per-pixel energy (RUN_DIR/checks.csv has SSIM too).")
    deletion = "Deletion AUC (lower is better)"
    parts += [words for column, words in _CHECK_WORDS.items()
              if column in columns or (column == deletion and "Insertion AUC (higher is better)" in columns)]
    return " ".join(p for p in parts if p)


CHECK_COLUMNS = {
    ("deletion", "auc"): "Deletion AUC (lower is better)",
    ("insertion", "auc"): "Insertion AUC (higher is better)",
    ("randomisation", "spearman"): "Similarity after full randomisation",
    ("input", "spearman"): "Input dependence",
    ("class", "spearman"): "Class dependence",
}


def check_summary(checks: pd.DataFrame) -> pd.DataFrame:
    """Per method, the mean of each model check's summary numbers (the run's checks' ``scores``,
    from checks.jsonl rows): AUCs, and similarities (randomisation at its last step, where every
    group of layers is re-initialised), and a plugin check's the same way."""
    if checks.empty:
        return pd.DataFrame(index=pd.Index([], name="method"))
    out = {}
    for score in described().scores():
        part = _score_rows(checks, score)
        if not part.empty:
            out[score.label] = part.groupby("method")["value"].mean()
    return pd.DataFrame(out)


def _score_rows(checks: pd.DataFrame, score: ScoreInfo) -> pd.DataFrame:
    """The rows of checks.jsonl a score averages: its test and measure (at the last step)."""
    part = checks[(checks["test"] == score.test) & (checks["measure"] == score.measure)]
    if score.last_step and not part.empty:
        part = part[part["step"] == part["step"].max()]
    return part


# --- intervals and ranks ------------------------------------------------------------------------

CI_LOW, CI_HIGH = "95 % CI low", "95 % CI high"


def ci_columns(column: str) -> tuple[str, str]:
    """The card CSV's interval columns of a mean's column."""
    return f"{column} {CI_LOW}", f"{column} {CI_HIGH}"


def _intervals(frames: list[tuple[str, str, pd.DataFrame, str]]) -> pd.DataFrame:
    """Cluster-bootstrap intervals over photos of many means from one draw of the photos:
    ``frames`` holds (method, card column, rows, value column); the photos are every photo of
    every frame, ordered as ``cluster_bootstrap_ci`` orders them. Index method, two columns per
    card column (``ci_columns``)."""
    if not frames:
        return pd.DataFrame(index=pd.Index([], name="method"))
    photos = np.unique(np.concatenate([rows["id"].to_numpy().astype(str) for _, _, rows, _ in frames]))
    sums, counts = np.zeros((len(photos), len(frames))), np.zeros((len(photos), len(frames)))
    for j, (_, _, rows, value) in enumerate(frames):
        v = rows[value].to_numpy(dtype=float)
        ok = np.isfinite(v)
        at = np.searchsorted(photos, rows["id"].to_numpy().astype(str)[ok])
        sums[:, j] = np.bincount(at, weights=v[ok], minlength=len(photos))
        counts[:, j] = np.bincount(at, minlength=len(photos))
    lo, hi = cluster_bootstrap_cis(sums, counts)
    out: dict[str, dict[str, float]] = {}
    for j, (method, column, _, _) in enumerate(frames):
        low, high = ci_columns(column)
        out.setdefault(low, {})[method] = float(lo[j])
        out.setdefault(high, {})[method] = float(hi[j])
    return pd.DataFrame(out).rename_axis("method")


def record_intervals(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Per method, the interval of the card's mean of each record field (``columns``: field ->
    card column) over its records with a finite P, as the card's means."""
    valid = df[np.isfinite(df["P"].to_numpy(dtype=float))]
    return _intervals([(str(method), column, part, field) for method, part in valid.groupby("method", sort=False)
                       for field, column in columns.items() if field in part.columns])


def check_intervals(checks: pd.DataFrame) -> pd.DataFrame:
    """Per method, the interval of each check score's mean (``check_summary``) over the photos
    the check's rows are of (none for rows that do not name their photo)."""
    if checks.empty or "id" not in checks.columns:
        return pd.DataFrame(index=pd.Index([], name="method"))
    return _intervals([(str(method), score.label, rows, "value") for score in described().scores()
                       for method, rows in _score_rows(checks, score).groupby("method", sort=False)])


@dataclass(frozen=True)
class Rankings:
    """The methods' ranks per metric and per category (``categories``), and the pairs of
    metrics of one category that order the methods oppositely."""

    metrics: list[Scored]  # those some method has a rank on
    means: pd.DataFrame  # method (methods and baselines) x metric key
    ranks: pd.DataFrame  # method (methods only) x metric key, 1 = best
    by_category: pd.DataFrame  # method (methods only) x category, 1 = best
    conflicts: list[categories.Conflict]


def rankings(df: pd.DataFrame, checks: pd.DataFrame | None = None) -> Rankings:
    """Ranks of the methods (not the baselines) on every metric and check score of the run with
    a category and a direction; the means they rank are the card's (records with a finite P)."""
    valid = df[np.isfinite(df["P"].to_numpy(dtype=float))]
    wanted = categories.scored(described())
    fields = [m.key for m in wanted if not m.check and m.key in valid.columns]
    means = valid.groupby("method")[fields].agg(_mean_finite) if fields else pd.DataFrame()
    summary = check_summary(checks if checks is not None else pd.DataFrame())
    means = pd.concat([means, summary], axis=1)
    everyone = order_methods(set(df["method"]))
    means = means.reindex(index=everyone)
    methods = [m for m in everyone if not is_baseline(m)]
    ranks = categories.metric_ranks(means, wanted, methods)
    shown = [m for m in wanted if ranks[m.key].notna().any()]
    ranks = ranks[[m.key for m in shown]]
    return Rankings(shown, means, ranks, categories.category_ranks(ranks, shown), categories.conflicts(ranks, shown))


def _flags(row: dict[Any, Any], edges_p: float) -> str:
    flags = []
    if float(row.get("Input dependence", math.nan)) >= FLAG_INPUT:
        flags.append("does not depend on the photo")
    if float(row.get("Similarity after full randomisation", math.nan)) >= FLAG_RANDOM:
        flags.append("insensitive to the model's weights")
    if math.isfinite(edges_p) and float(row["Mean P"]) <= edges_p:
        flags.append("no better than an edge detector")
    return "; ".join(flags)


# Columns of the summaries and the card that a plugin metric's column must not repeat.
_TAKEN = frozenset(("Records", "Photos", "Sum of P", "Mean P", "Median P", "95 % CI low", "95 % CI high",
                    "Mean chance", "Mean lift", "Pointing (%)", "RMA", "NaN (reason)", "Picture", "Reference",
                    "Flags", *CARD_FIELDS.values(), *CHECK_COLUMNS.values()))

# The method card's win rate against the best baseline: numbers in the CSV, one cell on the page.
WIN = "Wins over the best baseline (%)"
WIN_PHOTOS = "Photos paired with the best baseline"
WIN_CELL = "Wins over the best baseline"


def win_caption(best: str) -> str:
    """The card's sentence defining the win rate, naming the best baseline."""
    return (f"Wins over the best baseline ({method_label(best)}, the one with the highest mean P, as in the paired "
            "tests): the share of photos on which the method's mean P, over the records both have (same photo, "
            "category and size, both P finite), is above the baseline's, as 'photos won of photos compared'; a tie "
            "counts half; —: a baseline.")


def _win_rates(df: pd.DataFrame, best: str) -> pd.DataFrame:
    """Per method, 'A wins' and photos of the paired test against `best` (stats.versus_baseline on
    the same matched records, so the card and the paired table cannot disagree)."""
    methods = [m for m in order_methods(set(df["method"])) if not is_baseline(m)]
    pairs = versus_baseline(matched(df), methods, best).set_index("method A")
    return pd.DataFrame({WIN: 100.0 * pairs["A wins"].astype(float), WIN_PHOTOS: pairs["Photos"].astype(float)})


def method_card(df: pd.DataFrame, checks: pd.DataFrame | None = None, ranked: Rankings | None = None) -> pd.DataFrame:
    """One row per method and baseline: how its pictures are drawn, its paper, records, photos,
    mean P and lift, the win rate over the best baseline (when the run has baselines), its rank in
    each metric category (``rankings``; NaN for a baseline), the mean of every metric beyond 0.2's
    (``shown_metrics``) and of every optional measurement (CARD_FIELDS) the records carry, the
    validity checks' means (check_summary), plain-words flags for methods, and last the 95 %
    cluster-bootstrap interval over photos of every mean but ms (``ci_columns``, for the CSV)."""
    card = _card(df)
    best = best_baseline(df)
    at = list(card.columns).index("Mean lift") + 1
    if best is not None:
        wins = card[["method"]].join(_win_rates(df, best), on="method")
        for column in (WIN, WIN_PHOTOS):
            card.insert(at, column, wins[column].to_numpy(dtype=float))
            at += 1
    ranked = ranked if ranked is not None else rankings(df, checks)
    for category in ranked.by_category.columns:
        card.insert(at, categories.rank_column(category),
                    card["method"].map(ranked.by_category[category]).to_numpy(dtype=float))
        at += 1
    summary = check_summary(checks if checks is not None else pd.DataFrame())
    if not summary.empty:
        card = card.join(summary, on="method")
    edges = card.loc[card["method"] == "edges", "Mean P"]
    edges_p = float(edges.iloc[0]) if len(edges) else math.nan
    card["Flags"] = [("" if is_baseline(r["method"]) else _flags(r, edges_p)) for r in card.to_dict("records")]
    fields = {"P": "Mean P", "lift": "Mean lift", **{m.name: metric_column(m) for m in shown_metrics(df)},
              **{f: c for f, c in CARD_FIELDS.items() if f != "ms" and c in card.columns}}
    intervals = pd.concat([record_intervals(df, fields), check_intervals(checks if checks is not None
                                                                         else pd.DataFrame())], axis=1)
    return card.join(intervals, on="method") if not intervals.empty else card


def _card(df: pd.DataFrame) -> pd.DataFrame:
    extras = [f for f in CARD_FIELDS if f in df.columns and np.isfinite(df[f].to_numpy(dtype=float)).any()]
    metrics = shown_metrics(df)
    rows = []
    for method in order_methods(set(df["method"])):
        part = df[df["method"] == method]
        valid = part[np.isfinite(part["P"].to_numpy())]
        reference = described().method(method).reference
        row = {
            "method": method,
            "Kind": "baseline" if is_baseline(method) else "method",
            "Picture": draw_of(method),
            "Reference": reference or "–",
            "Records": len(valid),
            "Photos": valid["id"].nunique(),
            "Mean P": _mean_finite(valid["P"]),
            "Mean lift": _mean_finite(valid["lift"]),
            **{metric_column(m): _mean_finite(valid[m.name]) for m in metrics},
        }
        rows.append({**row, **{CARD_FIELDS[f]: _mean_finite(part[f]) for f in extras}})
    return pd.DataFrame(rows)


# --- display ------------------------------------------------------------------------------------

def table_for_display(table: pd.DataFrame) -> pd.DataFrame:
    """Words instead of internal names, for CSV/Markdown/HTML."""
    out = table.copy()
    out["method"] = out["method"].map(method_label)
    if "size" in out.columns:
        out["size"] = out["size"].map(size_label)
    if "CNN" in out.columns:
        out["CNN"] = out["CNN"].map(cnn_label)
    return out.rename(columns={"method": "Method", **GROUP_LABELS})


def card_for_display(card: pd.DataFrame) -> pd.DataFrame:
    """The method card in words, its two win-rate numbers as one cell ("3 of 4": photos won of
    photos compared, a tie counting half; — for a baseline, which is not compared with itself; –
    for a method with no photo to pair). No
    "Kind" column: a baseline's name already says "(baseline)", and the card must stay narrow."""
    out = table_for_display(card)
    out = out.drop(columns=[c for c in out.columns if c.endswith((f" {CI_LOW}", f" {CI_HIGH}"))])
    for column in [c for c in out.columns if categories.is_rank_column(c)]:
        out[column] = ["—" if kind == "baseline" else "–" if not math.isfinite(r) else f"{r:g}"
                       for kind, r in zip(out["Kind"], out[column])]
    if WIN in out.columns:
        cells = ["—" if kind == "baseline" else "–" if not math.isfinite(win) else f"{_photos_won(win, n)} of {int(n)}"
                 for kind, win, n in zip(out["Kind"], out[WIN], out[WIN_PHOTOS])]
        out.insert(list(out.columns).index(WIN), WIN_CELL, cells)
        out = out.drop(columns=[WIN, WIN_PHOTOS])
    return out.drop(columns="Kind")


def metric_intervals(card: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every mean of the card that has an interval (``method_card``'s CI columns): tidy, one row
    per (method, mean) with its interval, for the CSV; and wide, methods by means, each cell
    "mean [low, high]", for the page."""
    columns = [c for c in card.columns if ci_columns(c)[0] in card.columns]
    shown = table_for_display(card)
    tidy = pd.DataFrame([{"Method": m, "Mean of": c, "Mean": row[c], CI_LOW: row[ci_columns(c)[0]],
                          CI_HIGH: row[ci_columns(c)[1]]}
                         for m, (_, row) in zip(shown["Method"], card.iterrows()) for c in columns])
    wide = pd.DataFrame({"Method": shown["Method"], **{c: [_with_interval(row, c) for _, row in card.iterrows()]
                                                       for c in columns}})
    return tidy, wide


def _with_interval(row: pd.Series, column: str) -> str:
    mean, (lo, hi) = float(row[column]), (float(row[c]) for c in ci_columns(column))
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) and math.isfinite(hi) else f"{mean:.3f}"


def _photos_won(win: float, n: float) -> str:
    """The photos won, from the share in percent: whole or a half (a tie counts half)."""
    won = round(win * n / 100 * 2) / 2
    return f"{won:g}"


# The card's headers on the page, short so that the card fits a 1280 px window; each keeps its
# full name as a tooltip (and in the CSV/Markdown), and the caption explains them.
CARD_HEADERS = {
    "Mean lift": "Lift",
    "Deletion AUC (lower is better)": "Del. AUC\u00a0↓", "Insertion AUC (higher is better)": "Ins. AUC\u00a0↑",
    "Similarity after full randomisation": "Rand. sim.", "Input dependence": "Input dep.",
    "Class dependence": "Class dep.",
}


def card_headers(columns: list[str]) -> dict[str, str]:
    """The short headers of these card columns (a category's rank: ``categories.short_header``)."""
    ranks = {c: categories.short_header(c.removesuffix(categories.RANK).lower()) for c in columns
             if categories.is_rank_column(c)}
    return {**CARD_HEADERS, **ranks}


def card_headers_caption(columns: list[str]) -> str:
    """The full names of the short headers the shown card uses."""
    headers = card_headers(columns)
    names = [f"{headers[c]}: {c}" for c in columns if c in headers]
    return f"Headers: {'; '.join(names)}." if names else ""


def _fmt(value: object, column: str, digits: int = 3) -> str:
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return "–"
        if column == "Sum of P":
            return f"{value:.2f}"
        if column.endswith("(%)") or column == "ms per map":
            return f"{value:.1f}"
        if "p" in column.split() and value < 0.001:  # p-values: keep tiny ones readable
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return str(value)


def format_cells(table: pd.DataFrame, digits: int = 3) -> list[list[str]]:
    return [[_fmt(v, c, digits) for v, c in zip(row, table.columns)] for row in table.itertuples(index=False)]


def to_markdown(table: pd.DataFrame, caption: str = "", digits: int = 3) -> str:
    def esc(text: str) -> str:
        # Names come from the data (categories, photos): markdown viewers render raw HTML, a pipe
        # would split the cell and a line break would end the row.
        text = html.escape(text, quote=False)
        return " ".join(text.splitlines()).replace("|", "\\|")

    head = "| " + " | ".join(esc(str(c)) for c in table.columns) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(table[c]) else "---" for c in table.columns) + "|"
    body = ["| " + " | ".join(esc(v) for v in row) + " |" for row in format_cells(table, digits)]
    text = "\n".join([head, rule, *body]) + "\n"
    return f"{text}\n{caption}\n" if caption else text


def write_table(table: pd.DataFrame, out_dir: Path, name: str, caption: str, digits: int = 3,
                csv_table: pd.DataFrame | None = None) -> dict[str, Path]:
    """`name`.csv (full precision; `csv_table` when the shown table merges numbers into text) and
    `name`.md (rounded to `digits`, with caption)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{name}.csv", out_dir / f"{name}.md"
    (table if csv_table is None else csv_table).to_csv(csv_path, index=False, float_format="%.10g")
    md_path.write_text(to_markdown(table, caption, digits), encoding="utf-8")
    return {"csv": csv_path, "md": md_path}


def paired_for_display(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    out["method A"] = out["method A"].map(method_label)
    out["method B"] = out["method B"].map(method_label)
    out["A wins"] = 100.0 * out["A wins"]
    return out.rename(columns={"method A": "Method A", "method B": "Method B", "A wins": "A wins (%)"})
