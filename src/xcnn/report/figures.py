"""Figures as PNG and SVG (and EPS on request), for each view of the records (write_figures): mean P per method
(thesis Fig. 7.6), per CNN and size (Fig. 7.7, 7.9), per size (with more than one), per category,
the distribution of P − chance, and mean P against mean lift. The figures made once per run
(the checks' curves, the ranks per metric) are ``check_figures``'.

Every bar figure is a set of panels of horizontal bars, one bar per method and baseline in
registry order, on a shared P axis from 0 to 1: names stay readable for any number of methods,
and panels compare at a glance.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the report runs headless (servers, CI)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from PIL import Image  # noqa: E402

from xcnn.report.stats import N_RESAMPLES, SEED, cluster_bootstrap_ci  # noqa: E402
from xcnn.report.tables import (  # noqa: E402
    cnn_label, described, is_baseline, method_label, order_methods, order_sizes, size_label, thesis,
)

log = logging.getLogger(__name__)

# One colour per method in every figure and on the page. The thesis's five keep their
# Okabe–Ito colours; the rest come from Paul Tol's muted set (both safe for colour-blind
# viewers); the baselines are greys, and their bars are hatched as well.
PALETTE: dict[str, str] = {
    "gradient": "#0072B2",
    "deconvnet": "#E69F00",
    "guided_backprop": "#009E73",
    "gradcam": "#D55E00",
    "guided_gradcam": "#CC79A7",
    "input_x_gradient": "#56B4E9",
    "gradcam_pp": "#882255",
    "xgradcam": "#AA4499",
    "layercam": "#332288",
    "hirescam": "#999933",
    "eigencam": "#661100",
    "scorecam": "#DDCC77",
    "integrated_gradients": "#117733",
    "smoothgrad": "#44AA99",
    "ablationcam": "#997700",
    "lrp_epsilon_plus_flat": "#6699CC",
    "lrp_epsilon_gamma_box": "#004488",
    "occlusion": "#EE99AA",
    "rise": "#88CCEE",
    "uniform": "#C8C8C8",
    "centre": "#9E9E9E",
    "edges": "#6E6E6E",
}
_EXTRA = ["#88CCEE", "#6699CC", "#997700", "#EE99AA", "#004488"]
_BASELINE_EXTRA = "#B0B0B0"
HATCH = "///"
FORMATS = ("png", "svg")  # EPS on request (`xcnn report --eps`): it adds a third of the figures' size
EPS = "eps"
CHANCE_NOTE = "Dashed tick: mean chance level (area share of the dilated mask)."
BAR_NOTE = ("Bars: mean P; whiskers: 95 % cluster-bootstrap interval over photos; n = records / photos. "
            "Grey hatched bars: model-free baselines. " + CHANCE_NOTE)
# A local rc context, so importing this module changes no global state.
RC = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=1.1), "savefig.dpi": 150,
      "axes.titleweight": "bold", "legend.frameon": False, "hatch.color": "#555555", "hatch.linewidth": 0.8}
# matplotlib 3.10 renamed boxplot's vert=False; both spellings for the versions we allow.
_HORIZONTAL = ({"orientation": "horizontal"} if tuple(int(v) for v in matplotlib.__version__.split(".")[:2]) >= (3, 10)
               else {"vert": False})
_BAR_H = 0.34  # inches per bar in a panel
_PANEL_W = 4.2  # inches of P axis per panel


def method_color(method: str) -> str:
    if method in PALETTE:
        return PALETTE[method]
    if is_baseline(method):
        return _BASELINE_EXTRA
    return _EXTRA[sum(map(ord, method)) % len(_EXTRA)]  # fixed by the name: the same in every figure


def method_hatch(method: str) -> str:
    return HATCH if is_baseline(method) else ""


@dataclass
class Figure:
    name: str
    title: str
    caption: str
    view: str = "all"
    files: list[Path] = field(default_factory=list)
    wide: bool = False  # several panels side by side: the page gives it the full width

    def file(self, fmt: str) -> Path:
        return next(p for p in self.files if p.suffix == f".{fmt}")


def save(fig: plt.Figure, out_dir: Path, name: str, eps: bool = False) -> list[Path]:
    paths = []
    for fmt in (*FORMATS, EPS) if eps else FORMATS:
        path = out_dir / f"{name}.{fmt}"
        if fmt == "png":
            _palette_png(fig, path)
        else:
            fig.savefig(path, format=fmt)  # constrained layout already fits every label in
        paths.append(path)
    plt.close(fig)
    return paths


def _palette_png(fig: plt.Figure, path: Path) -> None:
    """The PNG with a palette of 256 colours: a plot has a few dozen and their anti-aliased edges,
    so it looks the same at a third of the size (the demo's figures: 3.7 MB as RGBA, 1 MB so)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    buffer.seek(0)
    with Image.open(buffer) as im:
        rgba = im.convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    flat.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(path, "PNG", optimize=True)


def _positions(methods: list[str]) -> dict[str, float]:
    """Bar positions, top to bottom: methods, a gap, then baselines (a group of their own)."""
    pos: dict[str, float] = {}
    y = 0.0
    for i, m in enumerate(methods):
        if i and is_baseline(m) and not is_baseline(methods[i - 1]):
            y += 0.6
        pos[m] = y
        y += 1.0
    return pos


def _panel(ax: plt.Axes, rows: pd.DataFrame, pos: dict[str, float], title: str) -> None:
    """Horizontal bars of mean P with their interval, chance tick and n, on a 0–1 axis."""
    by_method = {r["method"]: r for _, r in rows.iterrows()}
    for m, y in pos.items():
        r = by_method.get(m)
        if r is None or not np.isfinite(r["Mean P"]):
            ax.text(0.01, y, "no record" if r is None else "no finite P", va="center", fontsize=9, color="#777777")
            continue
        mean, lo, hi = r["Mean P"], r["95 % CI low"], r["95 % CI high"]
        ax.barh(y, mean, 0.78, color=method_color(m), hatch=method_hatch(m), edgecolor="white", linewidth=0.6,
                zorder=2)
        if np.isfinite(lo):
            ax.errorbar(mean, y, xerr=[[mean - lo], [hi - mean]], color="#222222", capsize=2.5, linewidth=1.2,
                        zorder=3)
        if np.isfinite(r["Mean chance"]):
            ax.plot([r["Mean chance"]] * 2, [y - 0.42, y + 0.42], color="black", linestyle=(0, (2, 1.5)),
                    linewidth=1.6, zorder=4)
        # The numbers sit in a column right of the axis, so they never cover a bar or each other.
        ax.text(1.02, y, f"{mean:.2f}  n={int(r['Records'])}/{int(r['Photos'])}", transform=ax.get_yaxis_transform(),
                va="center", ha="left", fontsize=9, clip_on=False)
    baselines = [y for m, y in pos.items() if is_baseline(m)]
    if baselines and len(baselines) < len(pos):
        ax.axhline(min(baselines) - 0.8, color="#999999", linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(max(pos.values()) + 0.7, -0.7)
    method_ticks(ax, pos)
    ax.set_title(title, fontsize=12)


def bars(summary: pd.DataFrame, facets: list[tuple[str, pd.DataFrame]], ncols: int, title: str) -> plt.Figure:
    """One panel per (title, rows); every panel lists the same methods on a shared P axis."""
    pos = _positions(order_methods(set(summary["method"])))
    ncols = max(1, min(ncols, len(facets)))
    nrows = -(-len(facets) // ncols)
    height = _BAR_H * (max(pos.values()) + 1.5) + 0.9
    fig, axes = plt.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False, layout="constrained",
                             figsize=(2.4 + (_PANEL_W + 1.3) * ncols, height * nrows + 1.2))
    for ax, (panel_title, rows) in zip(axes.flat, facets):
        _panel(ax, rows, pos, panel_title)
    for ax in axes.flat[len(facets):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("Mean energy concentration P")
    fig.suptitle(title, fontsize=15, fontweight="bold")
    fig.supxlabel(BAR_NOTE, fontsize=9, color="#444444", wrap=True)
    return fig


def _split(summary: pd.DataFrame, column: str, levels: list, name) -> list[tuple[str, pd.DataFrame]]:
    return [(name(v), summary[summary[column] == v]) for v in levels]


def distribution(df: pd.DataFrame, title: str) -> plt.Figure:
    """Per method, the spread of P − chance over records: 0 is chance, whatever the object's size."""
    methods = order_methods(set(df["method"]))
    pos = _positions(methods)
    diff = df["P"].to_numpy(float) - df["chance"].to_numpy(float)
    ok = np.isfinite(diff)
    fig, ax = plt.subplots(figsize=(2.4 + _PANEL_W * 1.5 + 1.3, _BAR_H * 1.3 * (max(pos.values()) + 1.5) + 1.6),
                           layout="constrained")
    for m, y in pos.items():
        sel = ok & (df["method"] == m).to_numpy()
        values = diff[sel]
        if not len(values):
            ax.text(-0.98, y, "no finite P", va="center", fontsize=9, color="#777777")
            continue
        box = ax.boxplot(values, positions=[y], widths=0.6, patch_artist=True, **_HORIZONTAL,
                         showmeans=True, manage_ticks=False,
                         meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black",
                                    "markersize": 5},
                         flierprops={"marker": ".", "markersize": 3, "markerfacecolor": "#555555",
                                     "markeredgecolor": "none"},
                         medianprops={"color": "black", "linewidth": 1.5})
        for patch in box["boxes"]:
            patch.set_facecolor(method_color(m))
            patch.set_hatch(method_hatch(m))
            patch.set_edgecolor("#333333")
        photos = df.loc[sel, "id"].nunique()
        ax.text(1.02, y, f"n={len(values)}/{photos}", transform=ax.get_yaxis_transform(), va="center", fontsize=9)
    ax.axvline(0, color="black", linestyle=(0, (2, 1.5)), linewidth=1.6, zorder=1)
    ax.set_xlim(-1, 1)
    ax.set_ylim(max(pos.values()) + 0.7, -1.0)
    method_ticks(ax, pos)
    ax.set_xlabel("P − chance level (0 = no better than a uniform map)")
    ax.set_title(title, fontsize=15)
    fig.supxlabel("Boxes: quartiles; line: median; diamond: mean; whiskers: 1.5 × IQR; dots: records beyond. "
                  "n = records / photos.", fontsize=9, color="#444444")
    return fig


def p_lift_points(df: pd.DataFrame, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> pd.DataFrame:
    """The points of `p_vs_lift`, one per method and baseline in registry order: mean P and mean
    lift over its records with a finite P (as in the summary tables), each with its 95 %
    cluster-bootstrap interval over photos."""
    rows = []
    finite_p = np.isfinite(df["P"].to_numpy(dtype=float))
    for method in order_methods(set(df["method"])):
        part = df[finite_p & (df["method"] == method).to_numpy()]
        row: dict[str, object] = {"method": method, "baseline": is_baseline(method), "Records": len(part),
                                  "Photos": part["id"].nunique()}
        for column in ("P", "lift"):
            ok = part[np.isfinite(part[column].to_numpy(dtype=float))]
            values = ok[column].to_numpy(dtype=float)
            lo, hi = cluster_bootstrap_ci(values, ok["id"].to_numpy(), n_resamples=n_resamples, seed=seed)
            row |= {f"Mean {column}": float(values.mean()) if len(values) else np.nan,
                    f"{column} low": lo, f"{column} high": hi}
        rows.append(row)
    return pd.DataFrame(rows)


def _whisker(mean: float, lo: float, hi: float) -> list[list[float]] | None:
    return [[mean - lo], [hi - mean]] if np.isfinite(lo) and np.isfinite(hi) else None


def _spread(targets: list[float], gap: float) -> list[float]:
    """Positions in [0, 1] as near as can be to the sorted `targets`, at least `gap` apart."""
    out: list[float] = []
    for t in targets:  # upwards: no label below its predecessor + gap
        out.append(max(t, out[-1] + gap) if out else t)
    top = 1.0
    for i in range(len(out) - 1, -1, -1):  # then down from the top, so none leaves the axes
        out[i] = min(out[i], top)
        top = out[i] - gap
    return out


def _label_column(ax: plt.Axes, labels: dict[tuple[float, float], list[str]]) -> None:
    """Names in a column right of the axes, each at its point's height where there is room, with
    a thin line to its point: methods cluster, and labels beside the points would overlap."""
    lo, hi = ax.get_ylim()
    points = sorted(labels.items(), key=lambda item: item[0][1])
    gap = 0.036  # one line of 9-point text on an axes about 5 inches high, in axes fractions
    heights = _spread([(lift - lo) / (hi - lo) for (_, lift), _ in points], gap)
    for ((p, lift), methods), y in zip(points, heights):
        base = all(is_baseline(m) for m in methods)
        ax.annotate(" / ".join(method_label(m) for m in methods), (p, lift), xytext=(1.02, y),
                    textcoords="axes fraction", va="center", fontsize=9, color="#555555" if base else "#1a1a1a",
                    fontstyle="italic" if base else "normal", annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "color": "#b0b0b0", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 4})


def p_vs_lift(points: pd.DataFrame, title: str) -> plt.Figure:
    """Mean P (x, 0–1) against mean lift (y) per method, whiskers both ways; baselines hollow grey
    squares. Methods with the same numbers (e.g. CAMs that coincide) share one point and one label."""
    fig, ax = plt.subplots(figsize=(9, 6.2), layout="constrained")
    ax.axhline(1.0, color="black", linestyle=(0, (2, 1.5)), linewidth=1.2, zorder=1)
    ax.text(0.995, 1.0, "lift 1 = chance ", transform=ax.get_yaxis_transform(), ha="right", va="bottom",
            fontsize=9, color="#444444")
    shown = points[np.isfinite(points["Mean P"].to_numpy(dtype=float))
                   & np.isfinite(points["Mean lift"].to_numpy(dtype=float))]
    labels: dict[tuple[float, float], list[str]] = {}
    for r in shown.to_dict("records"):
        p, lift, base, colour = float(r["Mean P"]), float(r["Mean lift"]), bool(r["baseline"]), method_color(r["method"])
        key = (round(p, 3), round(lift, 3))
        if key in labels:  # the same point as a method before it: drawn once, in the first one's colour
            labels[key].append(r["method"])
            continue
        labels[key] = [r["method"]]
        ax.errorbar(p, lift, xerr=_whisker(p, r["P low"], r["P high"]), yerr=_whisker(lift, r["lift low"], r["lift high"]),
                    fmt="s" if base else "o", markersize=7 if base else 8, color="#8a8a8a" if base else colour,
                    markerfacecolor="white" if base else colour, markeredgecolor="#555555" if base else "black",
                    markeredgewidth=1.2 if base else 0.6, elinewidth=1.0, capsize=2.5, zorder=2 if base else 3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, ax.get_ylim()[1])
    _label_column(ax, labels)
    ax.set_xlabel("Mean energy concentration P")
    ax.set_ylabel("Mean lift (P / chance)")
    ax.set_title(title, fontsize=15)
    fig.supxlabel("Whiskers: 95 % cluster-bootstrap intervals over photos. Hollow grey squares: model-free "
                  "baselines.", fontsize=9, color="#444444")
    return fig


def write_figures(df: pd.DataFrame, tables: dict[str, pd.DataFrame], out_dir: Path, view: str = "all",
                  view_label: str = "all records", eps: bool = False) -> list[Figure]:
    """Every figure of one view into `out_dir` (PNG and SVG, and EPS if `eps`); `tables` are
    `tables.summaries` of the same records."""
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if view == "all" else f"_{view}"
    figures: list[Figure] = []

    def add(fig: plt.Figure, name: str, title: str, caption: str) -> None:
        wide = bool(fig.get_size_inches()[0] > 12)
        files = save(fig, out_dir, name + suffix, eps)
        figures.append(Figure(name + suffix, title, f"{caption} Records: {view_label}.", view, files, wide))

    with plt.rc_context(RC):
        t = tables["method"]
        add(bars(t, [("", t)], 1, f"Mean P per method — {view_label}"), "mean_p_by_method",
            "Mean P per method", f"Mean energy concentration P per method (as {thesis('Fig. 7.6')}).")
        t = tables["CNN_size"]
        sizes, cnns = order_sizes(set(t["size"])), sorted(set(t["CNN"]))
        facets = [(f"{cnn_label(c)} · {size_label(s)}", t[(t["size"] == s) & (t["CNN"] == c)])
                  for s in sizes for c in cnns]
        ncols = len(cnns) if len(cnns) > 1 else len(sizes)  # one CNN: its sizes side by side
        add(bars(t, facets, ncols, f"Mean P per CNN and input size — {view_label}"), "mean_p_by_cnn",
            "Mean P per CNN and input size", "Mean P per method for each CNN (columns) and input size (rows), "
            f"on one shared axis (as {thesis('Figs. 7.7 and 7.9')}). Baselines use the photos each CNN was scored on.")
        t = tables["size"]
        if t["size"].nunique() > 1:
            add(bars(t, _split(t, "size", order_sizes(set(t["size"])), size_label), 4,
                        f"Mean P per input size — {view_label}"), "mean_p_by_size",
                "Mean P per input size", "Mean P per method for each input size, all CNNs together.")
        t = tables["class"]
        add(bars(t, _split(t, "class", sorted(set(t["class"])), str), 4, f"Mean P per category — {view_label}"),
            "mean_p_by_category", "Mean P per category",
            "Mean P per method for each category, all CNNs and sizes together.")
        add(distribution(df, f"P − chance per method — {view_label}"), "p_minus_chance", "Distribution of P − chance",
            "P minus the record's own chance level: objects of every size on one scale.")
        add(p_vs_lift(p_lift_points(df), f"P against lift — {view_label}"), "p_vs_lift", "P against lift",
            "Mean P against mean lift (P / chance) per method, with 95 % cluster-bootstrap intervals over photos; "
            "hollow grey squares: baselines.")
    return figures


def heat_stops(n: int = 11) -> list[str]:
    """CSS colour stops of the heat maps' colour map, for a colour bar on the page."""
    cmap = matplotlib.colormaps["jet"]
    return [matplotlib.colors.to_hex(cmap(i / (n - 1))) for i in range(n)]


def registry_names() -> list[str]:
    """Every method and baseline the run describes (0.2's outside a report), in registry order."""
    return order_methods(set(described().methods))


def method_ticks(ax: plt.Axes, pos: dict[str, float]) -> None:
    """Method names on the y axis, baselines in grey italics."""
    ax.set_yticks(list(pos.values()), [method_label(m) for m in pos])
    for tick, m in zip(ax.get_yticklabels(), pos):
        if is_baseline(m):
            tick.set_color("#555555")
            tick.set_fontstyle("italic")
    ax.grid(axis="y", visible=False)
