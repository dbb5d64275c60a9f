"""The method card: one row per method and baseline with its means, its win rate over the best
baseline, its ranks, its checks and plain-words flags; and the card in words for the page.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from xcnn.report import categories
from xcnn.report.labels import (
    CARD_FIELDS,
    described,
    draw_of,
    is_baseline,
    method_label,
    metric_column,
    order_methods,
    shown_metrics,
    table_for_display,
)
from xcnn.report.loading import best_baseline, matched
from xcnn.report.stats import versus_baseline
from xcnn.report.summaries import (
    CI_HIGH,
    CI_LOW,
    Rankings,
    check_intervals,
    check_summary,
    ci_columns,
    mean_finite,
    rankings,
    record_intervals,
)

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



def _flags(row: dict[Any, Any], edges_p: float) -> str:
    flags = []
    if float(row.get("Input dependence", math.nan)) >= FLAG_INPUT:
        flags.append("does not depend on the photo")
    if float(row.get("Similarity after full randomisation", math.nan)) >= FLAG_RANDOM:
        flags.append("insensitive to the model's weights")
    if math.isfinite(edges_p) and float(row["Mean P"]) <= edges_p:
        flags.append("no better than an edge detector")
    return "; ".join(flags)



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
            "Mean P": mean_finite(valid["P"]),
            "Mean lift": mean_finite(valid["lift"]),
            **{metric_column(m): mean_finite(valid[m.name]) for m in metrics},
        }
        rows.append({**row, **{CARD_FIELDS[f]: mean_finite(part[f]) for f in extras}})
    return pd.DataFrame(rows)


# --- display ------------------------------------------------------------------------------------


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
