"""The summary tables (per method, and split by model, size and category), the model checks'
means per method, the 95 % intervals of both, and the ranks per metric category.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from xcnn.report import categories
from xcnn.report.categories import Scored
from xcnn.report.labels import described, is_baseline, metric_column, order_methods, order_sizes, shown_metrics
from xcnn.report.loading import matched
from xcnn.report.stats import cluster_bootstrap_ci, cluster_bootstrap_cis
from xcnn.runfolder.descriptions import MetricInfo, ScoreInfo


def _nan_cell(notes: pd.Series) -> str:
    if notes.empty:
        return "0"
    reasons = notes.replace("", "no reason given").value_counts()
    text = "; ".join(f"{reason} ×{count}" for reason, count in reasons.items())
    return f"{len(notes)} ({text})"


def mean_finite(values: pd.Series) -> float:
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
        "Mean chance": mean_finite(valid["chance"]),
        "Mean lift": mean_finite(valid["lift"]),
        "Pointing (%)": mean_finite(valid["pointing_hit"]) * 100,
        "RMA": mean_finite(valid["rma"]),
        **{metric_column(m): mean_finite(valid[m.name]) for m in metrics},
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
    means = valid.groupby("method")[fields].agg(mean_finite) if fields else pd.DataFrame()
    summary = check_summary(checks if checks is not None else pd.DataFrame())
    means = pd.concat([means, summary], axis=1)
    everyone = order_methods(set(df["method"]))
    means = means.reindex(index=everyone)
    methods = [m for m in everyone if not is_baseline(m)]
    ranks = categories.metric_ranks(means, wanted, methods)
    shown = [m for m in wanted if ranks[m.key].notna().any()]
    ranks = ranks[[m.key for m in shown]]
    return Rankings(shown, means, ranks, categories.category_ranks(ranks, shown), categories.conflicts(ranks, shown))
