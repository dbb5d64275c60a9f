"""index.html: content, escaping, a self-contained folder checked in headless Chromium, and a
report that a failed `xcnn report` never damages."""
from __future__ import annotations

import contextlib
import hashlib
import io
import math
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from tests.report_fixture import BASELINES, MANY_METHODS, make_run_dir, rewrite_records, write_checks
from xcnn.cli.report import main as report_main
from xcnn.errors import XcnnError
from xcnn.experiment.export import write_exports
from xcnn.runfolder.reading import read_records
from xcnn.report import build, write_report

BASE = {"gradient": 0.1, "deconvnet": 0.2, "guided_backprop": 0.3, "gradcam": 0.4, "guided_gradcam": 0.5,
        "uniform": 0.16, "centre": 0.25, "edges": 0.2}
NASTY = '<script>window.pwned=1</script> & "quotes"'
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (apt-get install -y chromium chromium-driver)")


def _p(image_id, category, cnn, size, method):
    if (image_id, cnn, size, method) == (2, "resnet18", "224", "deconvnet"):
        return math.nan
    return BASE[method] + 0.05 * (image_id - 1)


def _rank(image_id, category, cnn):
    return 8 if (image_id, cnn) == (2, "resnet18") else 1  # one CNN ranks photo 2's target 8th


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = report_main(argv)
    return rc, out.getvalue().strip()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("html") / "my run"  # a space in the path: links must be quoted
    records = make_run_dir(run_dir, _p, baselines=BASELINES, rank_of=_rank)
    # Text from records reaches the page: make some of it hostile, and one record without a picture.
    for rec in records:
        if rec["id"] == 2 and rec["CNN"] != "none":
            rec["target_name"] = NASTY
        if not math.isfinite(rec["P"]):
            rec["map_png"] = ""
            rec["note"] = "all-zero map <E_celk = 0>"
    rewrite_records(run_dir, records)
    write_exports(run_dir)
    rc, out = _run([str(run_dir), "--images", "1,2:traffic light"])
    assert rc == 0
    return run_dir, records, Path(out)


def test_cli_writes_report_files(report):
    run_dir, _, index = report
    assert index == run_dir / "report" / "index.html" and index.is_file()
    tables = run_dir / "report" / "tables"
    for name in ("table_7_1_methods", "table_by_cnn", "table_by_size", "table_by_category", "paired_comparison",
                 "paired_vs_baseline"):
        for suffix in ("", "_top5"):
            assert (tables / f"{name}{suffix}.csv").is_file()
            assert (tables / f"{name}{suffix}.md").is_file()
    assert (tables / "method_card.csv").is_file()
    grids = sorted(p.name for p in (run_dir / "report" / "grids").iterdir())
    assert grids == ["grid_1_dog_224.webp", "grid_1_dog_original.webp",
                     "grid_2_traffic_light_224.webp", "grid_2_traffic_light_original.webp"]
    for name in ("records.csv", "exp.json", "config.json"):  # copied: the folder stands alone
        assert (run_dir / "report" / name).read_bytes() == (run_dir / name).read_bytes()
    assert not list(run_dir.glob("report.*"))  # nothing left aside


def test_header_explains_p_the_run_and_the_pictures(report):
    _, records, index = report
    page = index.read_text()
    assert "P = E / E<sub>celk</sub>" in page and "chance" in page
    photos = len({r["id"] for r in records})
    assert f"<dt>Photos and records</dt><dd>{photos} photos · {len(records)} records (1 with P = NaN)</dd>" in page
    assert "<dt>Baselines</dt><dd>Uniform (baseline), Centre (baseline), Edges (baseline)</dd>" in page
    assert "MobileNetV2 (Grad-CAM layer features.18)" in page  # from config.json
    assert "<dt>Versions</dt><dd>xcnn 0.1.0</dd>" in page
    assert "<dt>Mask growth</dt>" in page and "<dt>Date</dt>" in page
    for name in ("records.csv", "exp.json", "config.json"):
        assert f'<a href="{name}">{name}</a>' in page
    assert "99.5th percentile" in page and "linear-gradient(to right" in page  # how maps are drawn + colour bar
    assert "<!-- METHOD CARD" in page and 'id="method-card"' in page
    assert page.index('id="method-card"') < page.index('id="tables"')  # right under the header
    assert "several xcnn versions" not in page


def test_table_in_page_holds_hand_computed_values(report):
    _, _, index = report
    page = index.read_text()
    cells = r"</td><td[^>]*>".join
    # Gradient: 4 records at 0.10 (image 1) and 4 at 0.15 (image 2) -> 2 photos, sum 1.00, mean 0.125
    assert re.search(r"<td[^>]*>" + cells(["Gradient", "8", "2", r"1\.00", r"0\.125"]), page)
    # Deconvnet: one NaN left out -> 4·0.20 + 3·0.25 = 1.55 over 7 records, mean 0.221
    assert re.search(r"<td[^>]*>" + cells(["Deconvnet", "7", "2", r"1\.55", r"0\.221"]), page)
    assert "1 (all-zero map &lt;E_celk = 0&gt; ×1)" in page
    assert "left out of every other column" in page
    # baselines: a row group of their own, in italics
    assert re.search(r'<tr class="baseline group-start"><td[^>]*>Uniform \(baseline\)', page)
    # the best baseline (highest mean P) is the one every method is tested against
    assert "the best baseline on these records, Centre (baseline)" in page


def test_method_card_shows_the_win_rate_over_the_best_baseline(report):
    run_dir, _, index = report
    page = index.read_text()
    card = page[page.index('id="method-card"'):page.index('id="tables"')]
    cells = r"</td><td[^>]*>".join
    assert "<th>Wins over the best baseline</th>" in card.replace(' class=""', "")
    # Centre (mean P 0.25, 0.30 per photo) is the best baseline. Gradient (0.10, 0.15) loses on both
    # photos, Guided Grad-CAM (0.50, 0.55) wins on both; two decimals, lift = P / 0.16.
    assert re.search(r"<td[^>]*>" + cells(["Gradient", "grey", "Simonyan et al. 2013", "8", "2", r"0\.12", r"0\.78",
                                           "0 of 2"]), card)
    assert re.search(r"<td[^>]*>" + cells(["Guided Grad-CAM", "grey", "[^<]*", "8", "2", r"0\.53", r"3\.28",
                                           "2 of 2"]), card)
    assert len(re.findall(r"<tr class=\"baseline[^\"]*\">(?:<td[^>]*>[^<]*</td>){7}<td[^>]*>—</td>", card)) == 3
    assert "Wins over the best baseline (Centre (baseline), the one with the highest mean P" in card
    assert 'class="scroll compact"' in card and '<abbr title="Mean lift">Lift</abbr>' in card
    numbers = (run_dir / "report" / "tables" / "method_card.csv").read_text().splitlines()
    assert "Wins over the best baseline (%),Photos paired with the best baseline" in numbers[0]
    assert numbers[1].startswith("Gradient,method,grey,Simonyan et al. 2013,8,2,0.125,0.78125,0,2,")


def test_p_vs_lift_figure_for_each_view_on_the_page(report):
    run_dir, _, index = report
    page = index.read_text()
    figures = page[page.index('id="figures"'):page.index('id="grids"')]
    for name in ("p_vs_lift", "p_vs_lift_top5"):
        assert f'src="figures/{name}.png"' in figures
        assert (run_dir / "report" / "figures" / f"{name}.svg").is_file()
    assert "Mean P against mean lift (P / chance) per method" in figures


def test_text_from_records_is_escaped(report):
    _, _, index = report
    page = index.read_text()
    assert "<script>window.pwned" not in page
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt; &amp; &quot;quotes&quot;" in page


def test_gallery_cards_show_photo_map_and_numbers(report):
    _, records, index = report
    page = index.read_text()
    cards = re.findall(r'<figure class="card.*?</figure>', page, flags=re.S)
    assert len(cards) == len(records)
    assert sum('<div class="missing">no picture</div>' in c for c in cards) == 1
    assert all(c.count("<img") == 2 for c in cards if "no picture" not in c)  # photo with outline, and the map
    assert sum('class="card baseline"' in c for c in cards) == sum(r["CNN"] == "none" for r in records)
    first = cards[0]
    assert re.search(r'data-p="[0-9.]+" data-lift="[0-9.]+" data-chance="[0-9.]+" data-rank="1.0"', first)
    assert re.search(r"P = 0\.\d{3}<span class=\"sub\"> · lift [0-9.]+× · chance 0\.16", first)
    assert "target: golden retriever · rank 1 · prob. 0.50" in page
    assert "rank 8 · prob. 0.06" in page
    for key in ("p-desc", "lift-desc", "chance-asc"):
        assert f'<option value="{key}">' in page


def _links(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#]+)"', page)


def test_folder_is_self_contained(report):
    run_dir, _, index = report
    page = index.read_text()
    links = _links(page)
    assert links
    report_dir = (run_dir / "report").resolve()
    for link in links:
        assert not re.match(r"^([a-z]+:|/|\.\./)", link), link  # relative, inside report/
        target = (report_dir / unquote(link)).resolve()
        assert target.is_relative_to(report_dir) and target.is_file(), link


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_wrong_images_argument_leaves_the_good_report_untouched(report, capsys):
    run_dir, _, _ = report
    before = _tree(run_dir / "report")
    rc, out = _run([str(run_dir), "--images", "99"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and out == ""
    assert len(err.splitlines()) == 1 and "99" in err
    assert _tree(run_dir / "report") == before
    assert not list(run_dir.glob("report.*"))


def test_a_failure_while_writing_leaves_the_good_report_untouched(report, monkeypatch):
    run_dir, _, _ = report
    before = _tree(run_dir / "report")

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(build.figures, "write_figures", broken)  # after the tables went into report.tmp-PID
    with pytest.raises(OSError):
        write_report(run_dir)
    assert _tree(run_dir / "report") == before
    assert not list(run_dir.glob("report.*"))


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """Eleven methods, three baselines and the similarity checks: the widest method card."""
    run_dir = tmp_path_factory.mktemp("many") / "many"
    make_run_dir(run_dir, images=((1, "dog"), (2, "cat")), cnns=("resnet18",), sizes=("224",),
                 methods=MANY_METHODS, baselines=BASELINES)
    records = read_records(run_dir)
    for rec in records:  # a run of two versions, and a validity check on some records
        rec["xcnn"] = "0.2.0" if rec["id"] == 2 else "0.1.0"
        rec["deletion_auc"] = 0.3 if rec["method"] == "gradcam" else None
    rewrite_records(run_dir, records)
    # Every method flagged twice (and Gradient, below the edges baseline, three times): the longest flags.
    write_checks(run_dir, [{"id": 1, "class": "dog", "CNN": "resnet18", "size": "224", "method": m, "test": test,
                            "measure": "spearman", "step": step, "value": 0.95, "steps": None, "seed": 0}
                           for m in MANY_METHODS for test, step in (("randomisation", 5), ("input", None),
                                                                    ("class", None))])
    return run_dir, write_report(run_dir)


def test_many_methods_and_baselines(many):
    _, index = many
    page = index.read_text()
    card = page[page.index('id="method-card"'):page.index('id="tables"')]
    assert card.count("<tr") == 1 + len(MANY_METHODS) + len(BASELINES)
    assert "Deletion AUC (lower is better)" in card and "Insertion AUC" not in card
    assert "several xcnn versions: 0.1.0 (14 records), 0.2.0 (14 records)" in page
    assert "Methods against the best baseline" in page


def test_empty_run_dir_names_the_folder(tmp_path):
    with pytest.raises(XcnnError, match=re.escape(str(tmp_path))):
        write_report(tmp_path)
    assert not (tmp_path / "report").exists()


# --- headless Chromium, on a copy of report/ alone --------------------------------------------

# Test-only: loads every picture, exercises sort, filters and the view switch, and writes what it
# found into <body data-…> for --dump-dom. Injected into a copy; the shipped page has no such code.
SELF_CHECK = """<script>
(function(){
  var errors=[];
  window.addEventListener('error',function(e){errors.push(String(e.message||e.type));},true);
  var orig=console.error;console.error=function(){errors.push(Array.prototype.join.call(arguments,' '));
    return orig.apply(console,arguments);};
  var imgs=Array.prototype.slice.call(document.images);
  imgs.forEach(function(i){i.loading='eager';});
  function shown(){return document.getElementById('shown').textContent;}
  function pick(id,value){var s=document.querySelector(id);s.value=value;s.dispatchEvent(new Event('change'));}
  function visible(){return Array.prototype.filter.call(document.querySelectorAll('#gallery .card'),
    function(c){return c.style.display!=='none';});}
  window.addEventListener('load',function(){
    Promise.all(imgs.map(function(i){return i.complete?null:new Promise(function(r){
      i.addEventListener('load',r);i.addEventListener('error',r);});})).then(function(){
      var d=document.body.dataset, broken=imgs.filter(function(i){return !(i.complete&&i.naturalWidth>0);});
      d.imagesTotal=imgs.length;d.brokenImages=broken.length;
      d.brokenList=broken.slice(0,20).map(function(i){return i.getAttribute('src');}).join(' ');
      d.tables=document.querySelectorAll('table').length;
      pick('#sort','lift-asc');d.firstLift=visible()[0].dataset.lift;
      pick('#sort','chance-desc');d.firstChance=visible()[0].dataset.chance;
      pick('#sort','p-asc');d.firstP=visible()[0].dataset.p;
      pick('select[data-filter=method]','gradcam');d.shownGradcam=shown();
      pick('select[data-filter=method]','');pick('select[data-filter=rank]','top');d.shownTop=shown();
      var all=document.querySelector('.v-all'),top=document.querySelector('.v-top5');
      d.allShownBefore=getComputedStyle(all).display!=='none';d.topShownBefore=getComputedStyle(top).display!=='none';
      document.querySelector('label[for=view-top5]').click();
      d.allShownAfter=getComputedStyle(all).display!=='none';d.topShownAfter=getComputedStyle(top).display!=='none';
      d.jsErrors=errors.join(' | ');d.checkDone='1';});
  });
})();
</script></body>"""


def _chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
           "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def _body(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))


def _copy_with_check(run_dir: Path, dest: Path) -> Path:
    """report/ alone, copied elsewhere (no run folder beside it), plus a test page with the check."""
    shutil.copytree(run_dir / "report", dest)
    page = (dest / "index.html").read_text(encoding="utf-8")
    check = dest / "selfcheck.html"
    check.write_text(page.replace("</body>", SELF_CHECK), encoding="utf-8")
    return check


@needs_chromium
def test_copied_report_in_headless_chromium(report, tmp_path):
    run_dir, records, _ = report
    check = _copy_with_check(run_dir, tmp_path / "elsewhere" / "copy of report")
    result = _chromium(check.as_uri(), tmp_path, "--dump-dom")
    checks = _body(result.stdout)
    assert checks.get("check-done") == "1", result.stderr[-2000:]
    n_maps = sum(bool(r["map_png"]) for r in records)
    n_cards_with_photo = len(records)
    n_figures = len(list((run_dir / "report" / "figures").glob("*.png")))
    assert int(checks["images-total"]) == n_maps + n_cards_with_photo + n_figures + 4  # + grids
    assert checks["broken-images"] == "0", checks.get("broken-list")
    assert checks["js-errors"] == ""
    assert not [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    # the page's own sort and filters agree with the records
    finite = [r for r in records if math.isfinite(r["P"])]
    assert float(checks["first-p"]) == pytest.approx(min(r["P"] for r in finite))
    assert float(checks["first-lift"]) == pytest.approx(min(r["lift"] for r in finite))
    assert float(checks["first-chance"]) == pytest.approx(max(r["chance"] for r in records))
    assert checks["shown-gradcam"] == str(sum(r["method"] == "gradcam" for r in records))
    top = sum(r["CNN"] == "none" or r["target_rank"] <= 5 for r in records)
    assert checks["shown-top"] == str(top)
    # the view switch: all records first, one click shows the top-5 tables instead
    assert (checks["all-shown-before"], checks["top-shown-before"]) == ("true", "false")
    assert (checks["all-shown-after"], checks["top-shown-after"]) == ("false", "true")


@needs_chromium
def test_broken_picture_is_detected(report, tmp_path):
    # Negative control: the same check with one gallery picture deleted from the copy must see it.
    run_dir, _, index = report
    check = _copy_with_check(run_dir, tmp_path / "copy")
    victim = next(link for link in _links(index.read_text()) if link.startswith("maps/"))
    (check.parent / unquote(victim)).unlink()
    checks = _body(_chromium(check.as_uri(), tmp_path, "--dump-dom").stdout)
    assert checks["broken-images"] == "1"
    assert victim in checks["broken-list"]


@needs_chromium
def test_screenshot(report, tmp_path):
    _, _, index = report
    shot = tmp_path / "page.png"
    _chromium(index.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars")
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 20  # text, tables and figures, not an empty page


@needs_chromium
def test_widest_method_card_fits_a_1280_px_window(many, tmp_path):
    # The card (eleven methods, every check column, three flags on a row) must not scroll sideways.
    run_dir, _ = many
    check = tmp_path / "fit.html"
    page = (run_dir / "report" / "index.html").read_text(encoding="utf-8")
    probe = ("<script>window.addEventListener('load',function(){var s=document.querySelector('#method-card .scroll');"
             "document.body.dataset.overflow=s.scrollWidth-s.clientWidth;"
             "document.body.dataset.width=s.clientWidth;});</script></body>")
    check.write_text(page.replace("</body>", probe).replace('src="', f'src="{(run_dir / "report").as_uri()}/'),
                     encoding="utf-8")
    found = _body(_chromium(check.as_uri(), tmp_path, "--dump-dom", "--window-size=1280,2000").stdout)
    assert int(found["width"]) > 1000  # the card has the page's width, not a squeezed column
    assert int(found["overflow"]) <= 0
    assert "does not depend on the photo; insensitive to the model&#x27;s weights; no better than an edge detector" in page
