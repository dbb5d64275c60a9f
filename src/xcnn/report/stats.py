"""Statistics with the photo as the unit of independence: cluster bootstrap, paired tests, Holm.

One photo gives records for several CNNs, sizes and categories; those records are not
independent, so intervals resample photos (with all their records) and paired tests compare
per-photo means.
"""
from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

# Records of two methods are paired when they share these fields (the same map input).
PAIR_KEY = ["id", "class", "CNN", "size"]
PHOTO = "id"
N_RESAMPLES = 2000
SEED = 0
# Bounds the resample matrix (resamples × photos or records) so large runs stay within memory.
_MAX_CELLS = 4_000_000


def _percentiles(means: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


def bootstrap_ci(
    values: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = SEED, level: float = 0.95
) -> tuple[float, float]:
    """Naive percentile bootstrap of the mean, records taken as independent; (nan, nan) for none.

    Kept as the reference the cluster bootstrap is tested against; the report does not use it.
    """
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
    return _percentiles(means, level)


def cluster_bootstrap_ci(
    values: np.ndarray, clusters: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of the mean over records, resampling whole clusters (photos).

    Each resample draws as many photos as there are, with replacement, and takes every record of
    each drawn photo; its statistic is the mean over those records. (nan, nan) for no values.
    """
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return math.nan, math.nan
    _, index = np.unique(np.asarray(clusters).astype(str), return_inverse=True)
    sums = np.bincount(index, weights=x)
    counts = np.bincount(index).astype(float)
    lo, hi = cluster_bootstrap_cis(sums[:, None], counts[:, None], n_resamples, seed, level)
    return float(lo[0]), float(hi[0])


def cluster_bootstrap_cis(
    sums: np.ndarray, counts: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = SEED, level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile intervals of several means at once, from one draw of the clusters (photos).

    ``sums`` and ``counts`` are clusters × columns: per photo, the sum and the number of a
    column's values (a column: one metric of one method). Each resample draws the photos once for
    every column, so the many metrics of a card cost one draw; a photo without a value of a
    column adds nothing to that column's resampled mean. A column with every photo counted gets
    exactly ``cluster_bootstrap_ci``'s interval (same seed, photos in the same order). NaN for a
    column without values.
    """
    sums, counts = np.atleast_2d(np.asarray(sums, float)), np.atleast_2d(np.asarray(counts, float))
    k, m = sums.shape
    if k == 0 or m == 0:
        return np.full(m, np.nan), np.full(m, np.nan)
    rng = np.random.default_rng(seed)
    means = np.empty((n_resamples, m))
    chunk = max(1, _MAX_CELLS // k)
    with np.errstate(divide="ignore", invalid="ignore"):
        for start in range(0, n_resamples, chunk):
            stop = min(n_resamples, start + chunk)
            # How often each photo is drawn: a multinomial is the same draw as k picks with replacement.
            times = rng.multinomial(k, np.full(k, 1.0 / k), size=stop - start).astype(float)
            means[start:stop] = (times @ sums) / (times @ counts)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.full(m, np.nan), np.full(m, np.nan)
    some = np.isfinite(means).any(axis=0)
    if some.any():
        lo[some], hi[some] = np.nanpercentile(means[:, some], [tail, 100.0 - tail], axis=0)
    return lo, hi


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


PAIRED_COLUMNS = ["method A", "method B", "Photos", "Records", "A wins", "Mean ΔP (A − B)", "Wilcoxon p",
                  "Holm-adjusted p"]


def _pair(wide: pd.DataFrame, a: str, b: str) -> dict:
    """Per photo, the mean P of a and of b over the records (PAIR_KEY rows) where both are finite."""
    both = wide[[a, b]].dropna()
    per_photo = both.groupby(level=PHOTO).mean()
    d = (per_photo[a] - per_photo[b]).to_numpy()
    n = len(d)
    return {
        "method A": a,
        "method B": b,
        "Photos": n,
        "Records": len(both),
        "A wins": (np.sum(d > 0) + 0.5 * np.sum(d == 0)) / n if n else math.nan,
        "Mean ΔP (A − B)": float(d.mean()) if n else math.nan,
        "Wilcoxon p": wilcoxon_p(d),
    }


def _family(rows: list[dict], alpha: float) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=PAIRED_COLUMNS[:-1])
    out["Holm-adjusted p"] = holm(out["Wilcoxon p"].to_numpy()) if len(out) else []
    out[f"Holm p < {alpha:g}"] = ["yes" if q < alpha else "no" for q in out["Holm-adjusted p"]]
    return out


def _wide(paired: pd.DataFrame) -> pd.DataFrame:
    valid = paired[np.isfinite(paired["P"].to_numpy())]
    return valid.pivot_table(index=PAIR_KEY, columns="method", values="P", aggfunc="last")


def paired_comparison(paired: pd.DataFrame, methods: list[str], alpha: float = 0.05) -> pd.DataFrame:
    """Every pair of `methods`, one Holm family: per-photo mean P, win rate over photos, Wilcoxon.

    `paired` holds records keyed by PAIR_KEY (baselines already matched to each CNN's records).
    A pair of records with a NaN P is dropped; a tie between photo means counts as half a win.
    """
    wide = _wide(paired)
    rows = [_pair(wide, a, b) for a, b in itertools.combinations(methods, 2)
            if a in wide.columns and b in wide.columns]
    return _family(rows, alpha)


def versus_baseline(paired: pd.DataFrame, methods: list[str], baseline: str, alpha: float = 0.05) -> pd.DataFrame:
    """Each method against one baseline, a Holm family of its own (same columns as paired_comparison)."""
    wide = _wide(paired)
    if baseline not in wide.columns:
        return _family([], alpha)
    return _family([_pair(wide, m, baseline) for m in methods if m in wide.columns], alpha)
