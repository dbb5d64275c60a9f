"""Report figures (PNG/EPS/SVG) and image grids built from a hand-made RUN_DIR."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from tests.report_fixture import make_run_dir
from xcnn.errors import XcnnError
from xcnn.report import figures, grids, tables


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    make_run_dir(run_dir, images=((3, "dog"), (1, "traffic light"), (2, "dog"), (1, "dog"), (5, "cat")))
    df = tables.load_records(run_dir)
    summaries = tables.summaries(df, n_resamples=200)
    figs = figures.write_figures(df, summaries, run_dir / "report" / "figures")
    return run_dir, df, figs


def test_every_figure_in_png_eps_and_svg(run):
    _, _, figs = run
    names = {f.name for f in figs}
    assert {"mean_p_by_method", "mean_p_by_cnn_original", "mean_p_by_cnn_224", "mean_p_by_category",
            "mean_p_by_size", "p_distribution"} <= names
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


def test_method_colours_fixed_and_distinct(run):
    colours = [figures.method_color(m) for m in tables.METHODS]
    assert len(set(colours)) == 5
    assert figures.method_color("gradcam") == figures.PALETTE["gradcam"]
    assert figures.method_color("new_method") == figures.method_color("new_method")


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])


def _has_colour(png, hex_colour: str, tol: int = 8, min_pixels: int = 50) -> bool:
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(pixels - _rgb(hex_colour)).max(axis=-1) <= tol).sum()) >= min_pixels


def test_bar_chart_uses_the_palette(run):
    _, _, figs = run
    bars = next(f for f in figs if f.name == "mean_p_by_method").file("png")
    for method in tables.METHODS:
        assert _has_colour(bars, figures.PALETTE[method]), method


def test_grids_default_pairs_and_one_grid_per_size(run, tmp_path):
    run_dir, df, _ = run
    # the first image of each category
    assert grids.choose_images(df, None) == [(1, "dog"), (1, "traffic light"), (5, "cat")]
    out = grids.write_grids(df, run_dir, tmp_path, [(1, "dog")])
    assert len(out) == 2  # one per size
    sizes = {g.size for g in out}
    assert sizes == {"original", "224"}
    for g in out:
        assert g.path.is_file()
        # the mask outline (yellow) is drawn over the maps
        assert _has_colour(g.path, "#FFFF33", tol=40, min_pixels=200)


def test_grids_chosen_images(run, tmp_path):
    run_dir, df, _ = run
    assert grids.choose_images(df, [5]) == [(5, "cat")]
    assert grids.choose_images(df, [(1, "dog")]) == [(1, "dog")]
    assert grids.choose_images(df, [1]) == [(1, "dog"), (1, "traffic light")]
    with pytest.raises(XcnnError, match="image id 42"):
        grids.choose_images(df, [42])
    with pytest.raises(XcnnError, match="'horse'"):
        grids.choose_images(df, [(1, "horse")])


def test_grid_survives_a_missing_picture(tmp_path):
    run_dir = tmp_path / "run"
    records = make_run_dir(run_dir, images=((1, "dog"),), sizes=("224",))
    (run_dir / records[0]["map_png"]).unlink()
    df = tables.load_records(run_dir)
    out = grids.write_grids(df, run_dir, tmp_path / "g", None)
    assert len(out) == 1 and out[0].path.stat().st_size > 0
