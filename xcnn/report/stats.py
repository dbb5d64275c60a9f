"""Bootstrap intervals, Holm correction and paired method comparisons."""
from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

PAIR_KEY = ["id", "class", "CNN", "size"]
# Bounds the resample matrix (resamples × records) so large runs stay within memory.
_MAX_CELLS = 4_000_000


def bootstrap_ci(
    values: np.ndarray, n_resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; (nan, nan) for no values."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, _MAX_CELLS // n)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        means[start:stop] = x[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


def holm(pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adjusted[idx] = running
    return adjusted


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; 1.0 when every difference is zero."""
    d = np.asarray(differences, dtype=float)
    if len(d) == 0:
        return math.nan
    if not np.any(d != 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about ties / small n; the p-value is still valid
        return float(stats.wilcoxon(d).pvalue)


def paired_comparison(df: pd.DataFrame, methods: list[str], alpha: float = 0.05) -> pd.DataFrame:
    """Every pair of methods on the same (image, category, CNN, size): win rate, Wilcoxon, Holm.

    Pairs where either P is NaN are dropped. A tie counts as half a win.
    """
    valid = df[np.isfinite(df["P"].to_numpy())]
    wide = valid.pivot_table(index=PAIR_KEY, columns="method", values="P", aggfunc="last")
    rows = []
    for a, b in itertools.combinations(methods, 2):
        if a not in wide.columns or b not in wide.columns:
            continue
        both = wide[[a, b]].dropna()
        d = (both[a] - both[b]).to_numpy()
        n = len(d)
        rows.append({
            "method A": a,
            "method B": b,
            "Pairs": n,
            "A wins": (np.sum(d > 0) + 0.5 * np.sum(d == 0)) / n if n else math.nan,
            "Mean ΔP (A − B)": float(d.mean()) if n else math.nan,
            "Wilcoxon p": wilcoxon_p(d),
        })
    out = pd.DataFrame(rows, columns=["method A", "method B", "Pairs", "A wins", "Mean ΔP (A − B)",
                                      "Wilcoxon p"])
    out["Holm-adjusted p"] = holm(out["Wilcoxon p"].to_numpy()) if len(out) else []
    out[f"Holm p < {alpha:g}"] = ["yes" if q < alpha else "no" for q in out["Holm-adjusted p"]]
    return out
