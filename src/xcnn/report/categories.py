"""Each method's rank per metric category (Quantus's six: localisation, complexity, faithfulness,
robustness, randomisation, axiomatic, and any category a plugin names), and where two metrics of
one category rank the methods in opposite orders.

Driven by the run's descriptions alone: every per-map metric and every check score with a
category and a direction (``higher_is_better`` True or False) is ranked; a description (None)
and an uncategorised number are not. Only methods are ranked: a baseline is a yardstick with
no model, and adding one must not move the methods' ranks.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from xcnn.runfolder.descriptions import Described

# Quantus's order (Hedström et al. 2023); other categories follow in the order they come.
QUANTUS = ("localisation", "complexity", "faithfulness", "robustness", "randomisation", "axiomatic")
_SHORT = {"localisation": "Loc.", "complexity": "Compl.", "faithfulness": "Faith.", "robustness": "Robust.",
          "randomisation": "Rand.", "axiomatic": "Axiom."}
# Means closer than this are one value: methods that coincide (CAMs on one layer) tie, whatever
# the float noise of their means.
_DECIMALS = 10


@dataclass(frozen=True)
class Scored:
    """A number that ranks methods: a per-map metric (``key`` its record field) or a model
    check's score (``key`` its card column, ``check`` True)."""

    key: str
    label: str
    category: str
    higher_is_better: bool
    check: bool = False

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


def scored(run: Described) -> list[Scored]:
    """The run's rankable numbers, by category (Quantus's order, then others), in registry order
    within one."""
    out = [Scored(m.name, m.label, m.category, m.higher_is_better) for m in run.metrics.values()
           if m.category and m.higher_is_better is not None]
    out += [Scored(s.label, s.label, c.category, s.higher_is_better, check=True) for c in run.checks.values()
            for s in c.scores if c.category and s.higher_is_better is not None]
    order = ordered([s.category for s in out])
    return sorted(out, key=lambda s: order.index(s.category))


def ordered(categories: list[str]) -> list[str]:
    """Distinct categories: Quantus's six in its order, then the others as they first come."""
    seen = list(dict.fromkeys(categories))
    return [c for c in QUANTUS if c in seen] + [c for c in seen if c not in QUANTUS]


def title(category: str) -> str:
    return category[:1].upper() + category[1:]


RANK = " rank"  # the card's rank columns end so; no metric's column does ("Mean <label> ↑")


def rank_column(category: str) -> str:
    """The method card's column of a category."""
    return f"{title(category)}{RANK}"


def is_rank_column(column: str) -> bool:
    return column.endswith(RANK)


def short_header(category: str) -> str:
    """The card's header on the page, narrow (the full name is its tooltip)."""
    name = title(category)
    return f"{_SHORT.get(category, name if len(name) <= 7 else name[:5] + '.')}{RANK}"


def metric_ranks(means: pd.DataFrame, metrics: list[Scored], methods: list[str]) -> pd.DataFrame:
    """methods × metric keys: each method's rank on a metric among ``methods`` with a finite
    mean, 1 the best in the metric's direction, tied means sharing their average rank. NaN for
    a method without a value, and for a metric fewer than two methods have."""
    out = pd.DataFrame(np.nan, index=pd.Index(methods, name="method"), columns=[m.key for m in metrics])
    for metric in metrics:
        if metric.key not in means.columns:
            continue
        values = means[metric.key].reindex(methods).to_numpy(dtype=float)
        ok = np.isfinite(values)
        if ok.sum() < 2:
            continue
        better = np.round(values[ok], _DECIMALS) * (-1 if metric.higher_is_better else 1)
        out.loc[np.asarray(methods)[ok], metric.key] = stats.rankdata(better, method="average")
    return out


def normalised(ranks: pd.DataFrame) -> pd.DataFrame:
    """Ranks on 0..1, 1 the best and 0 the worst of the methods a metric ranks (Hedström et al.
    2023 colour methods by normalised rank), so metrics ranking different numbers of methods
    weigh alike."""
    counts = ranks.notna().sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (counts - ranks) / (counts - 1)


def category_ranks(ranks: pd.DataFrame, metrics: list[Scored]) -> pd.DataFrame:
    """methods × categories: the rank (1 the best, ties sharing the better rank) of each method's
    mean normalised rank over the category's metrics it has a value of; NaN without any."""
    norm = normalised(ranks)
    out = pd.DataFrame(index=ranks.index)
    for category in ordered([m.category for m in metrics]):
        keys = [m.key for m in metrics if m.category == category and ranks[m.key].notna().any()]
        if not keys:
            continue
        score = norm[keys].mean(axis=1, skipna=True)
        ok = score.notna().to_numpy()
        column = np.full(len(score), np.nan)
        column[ok] = stats.rankdata(-np.round(score.to_numpy()[ok], _DECIMALS), method="min")
        out[category] = column
    return out


@dataclass(frozen=True)
class Conflict:
    category: str
    a: Scored
    b: Scored
    spearman: float
    methods: int  # ranked by both

    def pair(self) -> str:
        return (f"{_plain(self.a.label)} and {_plain(self.b.label)} (Spearman {_minus(self.spearman)}, "
                f"{self.methods} methods)")


def _plain(label: str) -> str:
    """A label without "(lower is better)": the sentence is about order, not direction."""
    return re.sub(r"\s*\((lower|higher) is better\)", "", label)


def _minus(value: float) -> str:
    return f"{value:.2f}".replace("-", "−")


def sentences(found: list[Conflict]) -> list[str]:
    """One sentence per category with conflicts: "Faithfulness: Deletion AUC and ROAD (Spearman
    −0.60, 5 methods) rank the methods in opposite orders."."""
    out = []
    for category in ordered([c.category for c in found]):
        pairs = [c.pair() for c in found if c.category == category]
        listed = pairs[0] if len(pairs) == 1 else "; ".join(pairs[:-1]) + "; and " + pairs[-1]
        out.append(f"{title(category)}: {listed} rank the methods in opposite orders"
                   f"{'' if len(pairs) == 1 else ' (each pair)'}.")
    return out


def conflicts(ranks: pd.DataFrame, metrics: list[Scored]) -> list[Conflict]:
    """Every pair of metrics of one category whose ranks of the methods (each in its own
    direction) have a negative Spearman correlation, over the methods both rank."""
    out = []
    for i, a in enumerate(metrics):
        for b in metrics[i + 1:]:
            if a.category != b.category:
                continue
            rho, n = spearman(ranks[a.key].to_numpy(dtype=float), ranks[b.key].to_numpy(dtype=float))
            if rho < -1e-12:  # not float noise around an exact 0
                out.append(Conflict(a.category, a, b, rho, n))
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Spearman's correlation over the entries both have, and their number; NaN with fewer than
    two, or where either is constant (no order to compare)."""
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if n < 2:
        return math.nan, n
    rx, ry = stats.rankdata(x[ok]), stats.rankdata(y[ok])
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return math.nan, n
    return float(np.corrcoef(rx, ry)[0, 1]), n


def caption(categories: list[str], methods: int) -> str:
    """What the card's rank columns are."""
    if not categories:
        return ""
    names = ", ".join(title(c).lower() for c in categories)
    return (f"Ranks ({names}): within each category, every metric with a direction ranks the {methods} methods "
            "(1 = best; a lower-is-better metric reversed; ties share their mean rank), each rank is normalised "
            "to 0–1 (1 = best), and the method's mean normalised rank over the category's metrics is ranked "
            "again (1 = best). Baselines (—) are not ranked: adding a yardstick moves no method. The figure "
            "'Ranks per metric' shows every metric's rank.")
