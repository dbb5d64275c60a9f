"""index.html: content, escaping, and a headless-Chromium check that every picture loads."""
from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

from tests.report_fixture import make_run_dir
from xcnn.cli import main as cli_main
from xcnn.errors import XcnnError
from xcnn.report import write_report

BASE = {"gradient": 0.1, "deconvnet": 0.2, "guided_backprop": 0.3, "gradcam": 0.4, "guided_gradcam": 0.5}
NASTY = '<script>window.pwned=1</script> & "quotes"'
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (apt-get install -y chromium chromium-driver)")


def _p(image_id, category, cnn, size, method):
    if (image_id, cnn, size, method) == (2, "resnet18", "224", "deconvnet"):
        return math.nan
    return BASE[method] + 0.05 * (image_id - 1)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("html") / "my run"  # a space in the path: links must be quoted
    records = make_run_dir(run_dir, _p)
    # Text from records reaches the page: make some of it hostile, and one record without a picture.
    lines = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    for rec in lines:
        if rec["id"] == 2:
            rec["target_name"] = NASTY
        if not math.isfinite(rec["P"]):
            rec["map_png"] = ""
            rec["note"] = "all-zero map <E_celk = 0>"
    (run_dir / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["report", str(run_dir), "--images", "1,2:traffic light"]) == 0
    index = Path(out.getvalue().strip())
    return run_dir, lines, index


def test_cli_writes_report_files(report):
    run_dir, _, index = report
    assert index == run_dir / "report" / "index.html" and index.is_file()
    for name in ("table_7_1_methods", "table_by_cnn", "table_by_size", "table_by_category", "paired_comparison"):
        assert (run_dir / "report" / "tables" / f"{name}.csv").is_file()
        assert (run_dir / "report" / "tables" / f"{name}.md").is_file()
    grids = sorted(p.name for p in (run_dir / "report" / "grids").glob("*.png"))
    assert grids == ["grid_1_dog_224.png", "grid_1_dog_original.png",
                     "grid_2_traffic_light_224.png", "grid_2_traffic_light_original.png"]


def test_table_in_page_holds_hand_computed_values(report):
    _, _, index = report
    page = index.read_text()
    # Gradient: 4 records at 0.10 (image 1) and 4 at 0.15 (image 2) -> sum 1.00, mean 0.125
    assert re.search(r"<td[^>]*>Gradient</td><td[^>]*>8</td><td[^>]*>1\.00</td><td[^>]*>0\.125</td>", page)
    # Deconvnet: one NaN left out -> 4·0.20 + 3·0.25 = 1.55 over 7 records, mean 0.221
    assert re.search(r"<td[^>]*>Deconvnet</td><td[^>]*>7</td><td[^>]*>1\.55</td><td[^>]*>0\.221</td>", page)
    assert "1 (all-zero map &lt;E_celk = 0&gt; ×1)" in page
    assert "left out of every other column" in page


def test_text_from_records_is_escaped(report):
    _, _, index = report
    page = index.read_text()
    assert "<script>window.pwned" not in page
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt; &amp; &quot;quotes&quot;" in page


def test_gallery_has_every_record_and_no_network(report):
    run_dir, lines, index = report
    page = index.read_text()
    assert page.count('<figure class="card"') == len(lines)
    for rec in lines:
        if rec["map_png"]:
            assert f'src="../{quote(rec["map_png"])}"' in page
    assert page.count('<div class="missing">no picture</div>') == 1
    assert not re.search(r'(src|href)="(https?:)?//', page)
    for method in ("Gradient", "Deconvnet", "Guided Backprop", "Grad-CAM", "Guided Grad-CAM"):
        assert f"<b>{method}</b>" in page


def test_empty_run_dir_names_the_folder(tmp_path):
    with pytest.raises(XcnnError, match=re.escape(str(tmp_path))):
        write_report(tmp_path)


def _chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
           "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _body(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))


@needs_chromium
def test_page_in_headless_chromium(report, tmp_path):
    run_dir, lines, index = report
    result = _chromium(index.as_uri() + "#selfcheck", tmp_path, "--dump-dom")
    checks = _body(result.stdout)
    assert checks.get("check-done") == "1", result.stderr[-2000:]
    n_pictures = sum(bool(r["map_png"]) for r in lines)
    n_figures = len(list((run_dir / "report" / "figures").glob("*.png")))
    assert int(checks["images-total"]) == n_pictures + n_figures + 4  # gallery + figures + grids
    assert checks["broken-images"] == "0", checks.get("broken-list")
    assert checks["tables"] == "5"
    assert checks["js-errors"] == ""
    assert not [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    # the page's own sort and filter agree with the records
    finite = [r["P"] for r in lines if math.isfinite(r["P"])]
    assert float(checks["first-p"]) == pytest.approx(min(finite))
    assert checks["shown-gradcam"] == str(sum(r["method"] == "gradcam" for r in lines))


@needs_chromium
def test_broken_picture_is_detected(report, tmp_path):
    # Negative control: the same page with one gallery picture deleted must report it.
    run_dir, lines, _ = report
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    victim = next(r["map_png"] for r in lines if r["map_png"])
    (copy / victim).unlink()
    checks = _body(_chromium((copy / "report" / "index.html").as_uri() + "#selfcheck", tmp_path, "--dump-dom").stdout)
    assert checks["broken-images"] == "1"
    assert quote(victim) in checks["broken-list"]


@needs_chromium
def test_screenshot(report, tmp_path):
    _, _, index = report
    shot = tmp_path / "page.png"
    _chromium(index.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars")
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 20  # text, tables and figures, not an empty page
