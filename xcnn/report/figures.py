"""Bar charts of mean P (thesis Fig. 7.6, 7.7, 7.9, per category) and P distributions, as PNG/EPS/SVG."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the report runs headless (servers, CI)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from xcnn.report.tables import cnn_label, method_label, order_methods, order_sizes, size_label  # noqa: E402

log = logging.getLogger(__name__)

# One colour per method in every figure and on the page (Okabe–Ito, safe for colour-blind viewers).
PALETTE: dict[str, str] = {
    "gradient": "#0072B2",
    "deconvnet": "#E69F00",
    "guided_backprop": "#009E73",
    "gradcam": "#D55E00",
    "guided_gradcam": "#CC79A7",
}
_EXTRA = ["#56B4E9", "#F0E442", "#000000", "#999999"]
FORMATS = ("png", "eps", "svg")
P_LABEL = "Energy concentration P"
NOTE = ("Error bars: 95 % bootstrap interval of the mean.   "
        "Dashed line: chance level (area share of the dilated mask).")
# Large type for projectors; a local rc context so importing this module changes no global state.
RC = {**sns.axes_style("whitegrid"), **sns.plotting_context("talk"), "savefig.dpi": 150,
       "axes.titleweight": "bold", "legend.frameon": False}


def method_color(method: str) -> str:
    # Unknown methods get a colour fixed by their name, so it is the same in every figure.
    return PALETTE.get(method) or _EXTRA[sum(map(ord, method)) % len(_EXTRA)]


@dataclass
class Figure:
    name: str
    title: str
    caption: str
    files: list[Path] = field(default_factory=list)

    def file(self, fmt: str) -> Path:
        return next(p for p in self.files if p.suffix == f".{fmt}")


def _save(fig: plt.Figure, out_dir: Path, name: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = out_dir / f"{name}.{fmt}"
        fig.savefig(path, format=fmt, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _footnote(fig: plt.Figure, ax: plt.Axes, text: str) -> None:
    """Small text under the axes and their tick labels, wherever those end up."""
    fig.canvas.draw()
    box = ax.get_tightbbox(fig.canvas.get_renderer())
    x0, _ = fig.transFigure.inverted().transform((ax.get_window_extent().x0, 0))
    _, y = fig.transFigure.inverted().transform((0, box.y0 - 6))
    fig.text(x0, y, text, fontsize=11, color="#444444", ha="left", va="top")


def _wrap(label: str) -> str:
    return label.replace(" ", "\n", 1) if len(label) > 10 else label


def _top(summary: pd.DataFrame) -> float:
    values = np.concatenate([summary["95 % CI high"].to_numpy(float), summary["Mean P"].to_numpy(float),
                             summary["Mean chance"].to_numpy(float)])
    values = values[np.isfinite(values)]
    return min(1.05, max(values.max() * 1.15, 0.05)) if len(values) else 1.0


def _bars(summary: pd.DataFrame, group: str | None, title: str, xlabel: str, width: float) -> plt.Figure:
    """Bars of mean P: one cluster per value of `group` (one cluster if None), one bar per method."""
    methods = order_methods(set(summary["method"]))
    if group is None:
        groups = [None]
    elif group == "size":
        groups = order_sizes(set(summary[group]))
    else:
        groups = list(dict.fromkeys(summary[group]))  # already in table order
    n = len(methods)
    bar_w = 0.8 / n if group is not None else 0.7
    fig, ax = plt.subplots(figsize=(width, 6.2))
    for gi, g in enumerate(groups):
        rows = summary if g is None else summary[summary[group] == g]
        for mi, m in enumerate(methods):
            row = rows[rows["method"] == m]
            if row.empty:
                continue
            r = row.iloc[0]
            x = mi if g is None else gi - 0.4 + bar_w * (mi + 0.5)
            mean, lo, hi = r["Mean P"], r["95 % CI low"], r["95 % CI high"]
            ax.bar(x, mean, bar_w * 0.92, color=method_color(m), edgecolor="white", linewidth=0.8, zorder=2)
            if np.isfinite(lo):
                ax.errorbar(x, mean, yerr=[[mean - lo], [hi - mean]], color="#222222", capsize=4 if g is None else 2,
                            linewidth=1.6, zorder=3)
            if np.isfinite(r["Mean chance"]):
                ax.hlines(r["Mean chance"], x - bar_w * 0.46, x + bar_w * 0.46, colors="black",
                          linestyles=(0, (3, 2)), linewidth=2, zorder=4)
            if g is None and np.isfinite(mean):
                ax.annotate(f"{mean:.3f}", (x, hi if np.isfinite(hi) else mean), xytext=(0, 6),
                            textcoords="offset points", ha="center", va="bottom", fontsize=13)
    if group is None:
        ax.set_xticks(range(n), [_wrap(method_label(m)) for m in methods])
        ax.set_xlim(-0.6, n - 0.4)
        ax.legend(handles=[Line2D([], [], color="black", linestyle=(0, (3, 2)), linewidth=2, label="Chance level")],
                  loc="upper left", fontsize=13)
    else:
        name = {"size": size_label, "CNN": cnn_label}.get(group, str)
        labels = [_wrap(name(g)) for g in groups]
        if len(groups) > 8:  # too many for level labels, even wrapped
            ax.set_xticks(range(len(groups)), [g.replace("\n", " ") for g in labels], rotation=30, ha="right",
                          rotation_mode="anchor")
        else:
            ax.set_xticks(range(len(groups)), labels)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        handles = [Patch(color=method_color(m), label=method_label(m)) for m in methods]
        handles.append(Line2D([], [], color="black", linestyle=(0, (3, 2)), linewidth=2, label="Chance level"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=13)
    ax.set_ylim(0, _top(summary))
    ax.set_ylabel("Mean energy concentration P")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", visible=False)
    _footnote(fig, ax, NOTE)
    return fig


def _distribution(df: pd.DataFrame) -> plt.Figure:
    valid = df[np.isfinite(df["P"].to_numpy())].copy()
    methods = order_methods(set(df["method"]))
    labels = [method_label(m) for m in methods]
    valid["Method"] = valid["method"].map(method_label)
    fig, ax = plt.subplots(figsize=(10, 6.2))
    if not valid.empty:
        sns.violinplot(data=valid, x="Method", y="P", hue="Method", order=labels, hue_order=labels,
                       palette={method_label(m): method_color(m) for m in methods}, cut=0, inner="quart",
                       saturation=1.0, linewidth=1.2, density_norm="width", legend=False, ax=ax)
    chance = valid.groupby("method")["chance"].mean()
    for i, m in enumerate(methods):
        if m in chance and np.isfinite(chance[m]):
            ax.hlines(chance[m], i - 0.42, i + 0.42, colors="black", linestyles=(0, (3, 2)), linewidth=2, zorder=4)
    ax.set_xticks(range(len(labels)), [_wrap(label) for label in labels])
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_ylim(-0.02, 1.02)  # violins end at the data; P = 0 or 1 must not be cut by the frame
    ax.set_ylabel(P_LABEL)
    ax.set_xlabel("")
    ax.set_title("Distribution of P per method")
    ax.grid(axis="x", visible=False)
    _footnote(fig, ax, "Inner lines: quartiles.   Dashed line: chance level (area share of the dilated mask).")
    return fig


def write_figures(df: pd.DataFrame, tables: dict[str, pd.DataFrame], out_dir: Path) -> list[Figure]:
    """All figures into `out_dir`; `tables` holds summary_table results keyed method/CNN_size/size/class."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: list[Figure] = []
    with plt.rc_context(RC):
        fig = _bars(tables["method"], None, "Mean P per method (all records)", "", 10)
        figures.append(Figure("mean_p_by_method", "Mean P per method",
                              "Mean energy concentration P over all records (thesis Fig. 7.6).",
                              _save(fig, out_dir, "mean_p_by_method")))
        by_cnn_size = tables["CNN_size"]
        for size in order_sizes(set(by_cnn_size["size"])):
            part = by_cnn_size[by_cnn_size["size"] == size]
            name = f"mean_p_by_cnn_{_slug(size)}"
            fig = _bars(part, "CNN", f"Mean P per CNN — {size_label(size)}", "CNN",
                        min(20, max(10, 2.2 * part["CNN"].nunique() + 3)))
            figures.append(Figure(name, f"Mean P per CNN — {size_label(size)}",
                                  f"Mean P per method for each CNN, input {size_label(size).lower()} "
                                  "(thesis Fig. 7.7 / 7.9).", _save(fig, out_dir, name)))
        if tables["size"]["size"].nunique() > 1:
            fig = _bars(tables["size"], "size", "Mean P per input size", "Input size", 11)
            figures.append(Figure("mean_p_by_size", "Mean P per input size",
                                  "Mean P per method for each input size, all CNNs together.",
                                  _save(fig, out_dir, "mean_p_by_size")))
        part = tables["class"]
        fig = _bars(part, "class", "Mean P per category", "Category", min(20, max(11, 1.5 * part["class"].nunique() + 3)))
        figures.append(Figure("mean_p_by_category", "Mean P per category",
                              "Mean P per method for each COCO category, all CNNs and sizes together.",
                              _save(fig, out_dir, "mean_p_by_category")))
        fig = _distribution(df)
        figures.append(Figure("p_distribution", "Distribution of P per method",
                              "Distribution of P over all records per method (violins cut at the data range).",
                              _save(fig, out_dir, "p_distribution")))
    log.info("wrote %d figures to %s", len(figures), out_dir)
    return figures


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text)
