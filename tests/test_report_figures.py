"""Report figures (PNG/SVG, EPS on request) and image grids built from hand-made RUN_DIRs."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from tests.report_fixture import BASELINES, MANY_METHODS, make_run_dir
from xcnn.errors import XcnnError
from xcnn.runfolder import descriptions
from xcnn.report import figures, grids, tables


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Eleven methods and three baselines, two CNNs, two sizes, three categories."""
    run_dir = tmp_path_factory.mktemp("run")
    make_run_dir(run_dir, images=((3, "dog"), (1, "traffic light"), (2, "dog"), (1, "dog"), (5, "cat")),
                 methods=MANY_METHODS, baselines=BASELINES)
    df = tables.views(tables.load_records(run_dir))["all"]
    summaries = tables.summaries(df, n_resamples=200)
    figs = figures.write_figures(df, summaries, run_dir / "report" / "figures", eps=True)
    return run_dir, df, summaries, figs


def test_every_figure_in_png_eps_and_svg(run):
    _, _, _, figs = run
    assert [f.name for f in figs] == ["mean_p_by_method", "mean_p_by_cnn", "mean_p_by_size", "mean_p_by_category",
                                      "p_minus_chance", "p_vs_lift"]
    for fig in figs:
        assert sorted(p.suffix for p in fig.files) == [".eps", ".png", ".svg"]
        png, eps, svg = fig.file("png"), fig.file("eps"), fig.file("svg")
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            assert im.width > 600 and im.height > 400
            pixels = np.asarray(im.convert("RGB"))
        assert pixels.std() > 10  # something is drawn, not a blank canvas
        head = eps.read_bytes()[:40]
        assert head.startswith(b"%!PS-Adobe") and b"EPSF" in head
        text = eps.read_bytes()
        box = re.search(rb"%%BoundingBox: (\d+) (\d+) (\d+) (\d+)", text)
        assert box and int(box[3]) > int(box[1]) + 200 and int(box[4]) > int(box[2]) + 150
        assert text.rstrip().endswith(b"showpage")
        assert ET.parse(svg).getroot().tag.endswith("svg")


def _builtin_names() -> tuple[list[str], set[str]]:
    """0.2's methods and baselines, and today's built-ins where the registry can be loaded."""
    snapshot = descriptions.builtin()
    names, baselines = list(snapshot.methods), set(snapshot.baselines)
    try:
        from xcnn import registry

        live = {n: m for n, m in registry.methods().items() if m.builtin}
    except ImportError:  # no torch: the snapshot only
        live = {}
    names += [n for n in live if n not in names]
    return names, baselines | {n for n, m in live.items() if m.baseline}


def test_every_registry_name_has_its_own_colour_and_baselines_are_grey_and_hatched():
    names, baselines = _builtin_names()
    assert figures.registry_names() == list(descriptions.builtin().methods)
    colours = [figures.method_color(m) for m in names]
    assert len(set(colours)) == len(colours)
    for b in baselines:
        r, g, bl = (int(figures.method_color(b)[i:i + 2], 16) for i in (1, 3, 5))
        assert r == g == bl  # grey
        assert figures.method_hatch(b) and not figures.method_hatch("gradcam")
    assert figures.method_color("new_method") == figures.method_color("new_method")


def _texts(ax: plt.Axes) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_bars_share_a_0_to_1_axis_name_every_method_and_put_n_on_every_bar(run):
    _, df, summaries, _ = run
    t = summaries["CNN_size"]
    facets = [(f"{c} {s}", t[(t["CNN"] == c) & (t["size"] == s)]) for s in ("original", "224")
              for c in ("mobilenet_v2", "resnet18")]
    with plt.rc_context(figures.RC):
        fig = figures.bars(t, facets, 2, "per CNN")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 4  # one faceted figure: CNNs × sizes
    expected = [tables.method_label(m) for m in (*MANY_METHODS, *BASELINES)]
    for i, ax in enumerate(axes):
        assert ax.get_xlim() == (0, 1)
        assert ax.get_shared_x_axes().joined(ax, axes[0]) and ax.get_shared_y_axes().joined(ax, axes[0])
        if i % 2 == 0:  # the left column names the methods for its row
            assert [tick.get_text() for tick in ax.get_yticklabels()] == expected
        assert sum("n=" in s for s in _texts(ax)) == len(expected)  # n on every bar
        # baselines: hatched bars after the methods
        hatched = [p.get_hatch() for p in ax.patches]
        assert hatched[-3:] == [figures.HATCH] * 3 and not any(hatched[:-3])
    plt.close(fig)
    with plt.rc_context(figures.RC):
        fig = figures.distribution(df, "spread")
    (ax,) = fig.axes
    assert ax.get_xlim() == (-1, 1)  # P − chance: 0 is chance for every object size
    assert "chance" in ax.get_xlabel()
    assert sum(s.startswith("n=") for s in _texts(ax)) == len(expected)
    plt.close(fig)


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])


def _has_colour(png, hex_colour: str, tol: int = 8, min_pixels: int = 50) -> bool:
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(pixels - _rgb(hex_colour)).max(axis=-1) <= tol).sum()) >= min_pixels


def test_bar_chart_uses_the_palette(run):
    _, _, _, figs = run
    bars = next(f for f in figs if f.name == "mean_p_by_method").file("png")
    for method in MANY_METHODS:
        assert _has_colour(bars, figures.PALETTE[method]), method


def test_default_grids_are_informative(run):
    _, df, _, _ = run
    # the first photo of each category, then more up to four
    assert grids.choose_images(df, None) == [(1, "dog"), (1, "traffic light"), (5, "cat"), (2, "dog")]
    # an object covering most of the photo, or a target the model ranks 40th, shows little: skipped
    worse = df.copy()
    worse.loc[(worse["id"] == 1) & (worse["class"] == "dog"), "chance"] = 0.9
    worse.loc[(worse["id"] == 5) & (worse["CNN"] == "resnet18"), "target_rank"] = 40
    assert grids.choose_images(worse, None) == [(1, "traffic light"), (2, "dog"), (3, "dog")]
    # ...unless nothing else is left
    only = worse[worse["id"] == 5]
    assert grids.choose_images(only, None) == [(5, "cat")]


def test_grids_one_per_size_with_baselines_in_the_first_column(run, tmp_path):
    run_dir, df, _, _ = run
    out = grids.write_grids(df, run_dir, tmp_path, [(1, "dog")])
    assert {g.size for g in out} == {"original", "224"}
    for g in out:
        assert g.path.is_file()
        # the mask outline (yellow) is drawn over the maps
        assert _has_colour(g.path, "#FFFF33", tol=40, min_pixels=200)
        with Image.open(g.path) as im:  # 11 rows of methods, 3 columns: photo + 2 CNNs (no "none" column)
            assert im.height > 2.5 * im.width


def test_grids_chosen_images(run):
    _, df, _, _ = run
    assert grids.choose_images(df, [5]) == [(5, "cat")]
    assert grids.choose_images(df, [(1, "dog")]) == [(1, "dog")]
    assert grids.choose_images(df, [1]) == [(1, "dog"), (1, "traffic light")]
    assert grids.choose_images(df, ["5"]) == [(5, "cat")]
    with pytest.raises(XcnnError, match="image id 42"):
        grids.choose_images(df, [42])
    with pytest.raises(XcnnError, match="'horse'"):
        grids.choose_images(df, [(1, "horse")])


def test_grid_survives_a_missing_picture(tmp_path):
    run_dir = tmp_path / "run"
    records = make_run_dir(run_dir, images=((1, "dog"),), sizes=("224",))
    (run_dir / records[0]["map_png"]).unlink()
    df = tables.load_records(run_dir)
    out = grids.write_grids(df, run_dir, tmp_path / "g", grids.choose_images(df, None))
    assert len(out) == 1 and out[0].path.stat().st_size > 0


def test_check_figures_draw_one_curve_per_method_and_nothing_without_checks(tmp_path: Path) -> None:
    import pandas as pd

    from xcnn.report.check_figures import write_check_figures

    rows = [{"method": m, "test": "randomisation", "measure": meas, "step": k, "value": 1 - k / 5}
            for m in ("gradient", "gradcam") for meas in ("spearman", "ssim") for k in range(1, 6)]
    rows += [{"method": m, "test": t, "measure": "prob", "step": k, "value": k / 10}
             for m in ("gradient", "gradcam") for t in ("deletion", "insertion") for k in range(11)]
    figs = write_check_figures(pd.DataFrame(rows), tmp_path)
    assert [f.name for f in figs] == ["randomisation", "deletion_insertion"]
    assert all(p.is_file() and p.stat().st_size > 0 for f in figs for p in f.files)
    assert write_check_figures(pd.DataFrame(), tmp_path / "none") == []


def test_p_vs_lift_points_sit_at_each_methods_mean_p_and_mean_lift(tmp_path: Path) -> None:
    import pandas as pd

    # Gradient: photo 1 has P 0.2 and 0.4 (chance 0.2 -> lift 1, 2), photo 2 has P 0.6 (chance 0.3 -> lift 2),
    # and a NaN P that counts nowhere. Centre, a baseline: P 0.3 on both photos.
    rows = [(1, "gradient", 0.2, 0.2), (1, "gradient", 0.4, 0.2), (2, "gradient", 0.6, 0.3),
            (2, "gradient", float("nan"), 0.3), (1, "centre", 0.3, 0.2), (2, "centre", 0.3, 0.3)]
    df = pd.DataFrame([{"id": i, "method": m, "P": p, "chance": c, "lift": p / c} for i, m, p, c in rows])
    points = figures.p_lift_points(df, n_resamples=200).set_index("method")
    g = points.loc["gradient"]
    assert (g["Records"], g["Photos"], bool(g["baseline"])) == (3, 2, False)
    assert g["Mean P"] == pytest.approx(0.4) and g["Mean lift"] == pytest.approx(5 / 3)
    assert g["P low"] <= g["Mean P"] <= g["P high"] and g["lift low"] <= g["Mean lift"] <= g["lift high"]
    c = points.loc["centre"]
    assert bool(c["baseline"]) and c["Mean P"] == pytest.approx(0.3) and c["Mean lift"] == pytest.approx(1.25)
    assert (c["P low"], c["P high"]) == pytest.approx((0.3, 0.3))  # no spread, no width
    # the summary table's mean P and lift are the same numbers
    summary = tables.summary_table(df.assign(**{"class": "dog", "CNN": "net", "size": "224", "note": "",
                                                "rma": np.nan, "pointing_hit": np.nan}), n_resamples=50)
    assert summary.set_index("method").loc["gradient", "Mean lift"] == pytest.approx(g["Mean lift"])
    with plt.rc_context(figures.RC):
        fig = figures.p_vs_lift(points.reset_index(), "P against lift")
    (ax,) = fig.axes
    assert ax.get_xlim() == (0, 1) and ax.get_ylim()[0] == 0
    anchors = {t.get_text(): t.xy for t in ax.texts if hasattr(t, "xy")}
    assert anchors["Gradient"] == pytest.approx((0.4, round(5 / 3, 3)))
    assert anchors["Centre (baseline)"] == pytest.approx((0.3, 1.25))
    plt.close(fig)


def test_p_vs_lift_figure_is_written_in_every_format(run) -> None:
    run_dir, _, _, figs = run
    fig = next(f for f in figs if f.name == "p_vs_lift")
    assert all(p.is_file() and p.stat().st_size > 0 for p in fig.files) and "lift" in fig.caption
