"""Figures made once per run, when the run made them (write_check_figures): the randomisation
checks' similarity curves and the mean deletion and insertion curves; and the methods' ranks on
every metric with a category (write_ranks_figure). Drawn as ``figures`` draws the rest.
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the report runs headless (servers, CI)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from xcnn.report import categories  # noqa: E402
from xcnn.report.figures import RC, Figure, method_color, save  # noqa: E402
from xcnn.report.tables import (  # noqa: E402
    Rankings,
    method_label,
    order_methods,
)


def write_check_figures(checks: pd.DataFrame, out_dir: Path, eps: bool = False) -> list[Figure]:
    """The validity checks' curves, one line per method: similarity to the trained model's map
    along the randomisation cascade (as Adebayo et al. 2018, Fig. 2), and the mean deletion and
    insertion curves (Petsiuk et al. 2018). Nothing when the run made no such checks."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: list[Figure] = []
    with plt.rc_context(RC):
        rand = checks[(checks["test"] == "randomisation")] if not checks.empty else checks
        if not rand.empty:
            fig, axes = plt.subplots(1, 2, figsize=(13, 4.4), layout="constrained", sharey=True)
            for ax, measure in zip(axes, ("spearman", "ssim")):
                part = rand[rand["measure"] == measure]
                for method in order_methods(set(part["method"])):
                    curve = part[part["method"] == method].groupby("step")["value"].mean()
                    steps = [0, *curve.index.astype(int)]
                    ax.plot(steps, [1.0, *curve.to_numpy()], marker="o", color=method_color(method),
                            label=method_label(method))
                ax.set(title=measure.upper() if measure == "ssim" else "Spearman", xlabel="groups of layers re-initialised "
                       "(output first)", ylim=(-1.05, 1.05))
            axes[0].set_ylabel("similarity to the trained model's map")
            _legend_outside(fig, axes[0])
            figures.append(Figure("randomisation", "Model randomisation",
                                  "Similarity of each method's map to the trained model's map as the model's layers "
                                  "are re-initialised from the output down; a map that stays high does not reflect "
                                  "the weights.", "all", save(fig, out_dir, "randomisation", eps), True))
        curves = checks[(checks["measure"] == "prob")] if not checks.empty else checks
        if not curves.empty:
            fig, axes = plt.subplots(1, 2, figsize=(13, 4.4), layout="constrained", sharey=True)
            for ax, test in zip(axes, ("deletion", "insertion")):
                part = curves[curves["test"] == test]
                for method in order_methods(set(part["method"])):
                    mean = part[part["method"] == method].groupby("step")["value"].mean()
                    ax.plot(mean.index / max(mean.index.max(), 1), mean.to_numpy(), color=method_color(method),
                            label=method_label(method))
                ax.set(title=f"{test.capitalize()} ({'lower' if test == 'deletion' else 'higher'} is better)",
                       xlabel="fraction of pixels " + ("removed" if test == "deletion" else "put back"), ylim=(0, 1))
            axes[0].set_ylabel("target probability (mean)")
            _legend_outside(fig, axes[0])
            figures.append(Figure("deletion_insertion", "Deletion and insertion curves",
                                  "Mean target probability as the map's most salient pixels are removed (left) or put "
                                  "back into a blurred photo (right); the areas under them are in the method card.",
                                  "all", save(fig, out_dir, "deletion_insertion", eps), True))
    return figures


def _legend_outside(fig: plt.Figure, ax: plt.Axes) -> None:
    """One legend for the panels, right of them, so no curve hides under it."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=9)


RANKS_NOTE = ("Each cell: the method's rank on the metric among the methods (1 = best, in the metric's direction: "
              "↑ higher is better, ↓ lower is better; ties share their mean rank), coloured by the rank normalised "
              "to 0–1. Baselines are not ranked.")


def ranks_figure(ranked: Rankings) -> plt.Figure:
    """Methods (rows) by metrics (columns, grouped by category), each cell the method's rank on
    the metric, coloured by normalised rank (the presentation of Hedström et al. 2023)."""
    metrics, ranks = ranked.metrics, ranked.ranks
    norm = categories.normalised(ranks)
    n_rows, n_cols = ranks.shape
    fig, ax = plt.subplots(figsize=(3.2 + 0.62 * n_cols + 1.4, 1.9 + 0.36 * n_rows), layout="constrained")
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#eeeeee")
    text = np.array([["–" if not np.isfinite(r) else f"{r:g}" for r in row] for row in ranks.to_numpy(float)])
    sns.heatmap(norm.to_numpy(float), ax=ax, cmap=cmap, vmin=0, vmax=1, annot=text, fmt="", linewidths=1,
                linecolor="white", annot_kws={"fontsize": 9}, square=False,
                cbar_kws={"label": "normalised rank", "ticks": [0, 0.5, 1], "shrink": 0.8})
    cbar = ax.collections[0].colorbar
    if cbar is not None:
        cbar.set_ticklabels(["0 worst", "0.5", "1 best"])
    ax.set_yticks(np.arange(n_rows) + 0.5, [method_label(m) for m in ranks.index], rotation=0)
    # "(lower is better)" in a check's label says what the arrow says.
    labels = [re.sub(r"\s*\((lower|higher) is better\)", "", m.label) + f" {m.arrow}" for m in metrics]
    ax.set_xticks(np.arange(n_cols) + 0.5, labels, rotation=40, ha="right", rotation_mode="anchor")
    # The category of each block of columns above it, blocks parted by a thick white line.
    start = 0
    for category in categories.ordered([m.category for m in metrics]):
        width = sum(m.category == category for m in metrics)
        if start:
            ax.axvline(start, color="white", linewidth=4)
        ax.text(start + width / 2, -0.25, categories.title(category), ha="center", va="bottom", fontsize=10,
                fontweight="bold", clip_on=False)
        start += width
    ax.tick_params(length=0)
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_title("Ranks per metric", fontsize=14, pad=22)
    return fig


def write_ranks_figure(ranked: Rankings, out_dir: Path, eps: bool = False) -> list[Figure]:
    """The figure of ``ranks_figure``, when at least two methods are ranked on some metric."""
    if ranked.ranks.empty or len(ranked.ranks) < 2 or not ranked.metrics:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(RC):
        fig = ranks_figure(ranked)
        wide = bool(fig.get_size_inches()[0] > 12)
        files = save(fig, out_dir, "ranks_per_metric", eps)
    return [Figure("ranks_per_metric", "Ranks per metric", f"{RANKS_NOTE} Records: all records; model checks: their "
                   "rows in checks.csv. The method card ranks each category by the mean of these normalised ranks.",
                   "all", files, wide)]
