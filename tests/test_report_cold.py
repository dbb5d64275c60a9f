"""The report read cold (issue 21, item 7): every reference to the thesis cites it, every symbol and
number explains itself, checks that did not run are not described, the gallery comes in pages of
60 cards whose filters act on every card, and the folder travels light (EPS only on request)."""
from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tests.report_fixture import BASELINES, make_run_dir, rewrite_records, write_checks
from tests.test_report_html import _body, _chromium, needs_chromium
from xcnn.cli.report import main as report_main
from xcnn.report import files, grids, html, tables, write_report
from xcnn.report.run_info import run_info

CITATION = ('"Explainable Convolutional Neural Networks" (master\'s thesis, Brno University of Technology, '
            "2021)")
IMAGES = ((1, "dog"), (2, "cat"), (3, "dog"), (4, "cat"))


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """4 photos × 2 CNNs × 2 sizes × 5 methods + 3 baselines: 104 gallery cards, two pages."""
    run_dir = tmp_path_factory.mktemp("cold") / "run"
    records = make_run_dir(run_dir, images=IMAGES, baselines=BASELINES)
    return run_dir, records, write_report(run_dir)


def _page(index: Path) -> str:
    return index.read_text(encoding="utf-8")


def _blocks(page: str) -> list[str]:
    """Each table section, folded table and figure of the page, as HTML."""
    return [m.group(0) for m in re.finditer(r"<(section|details|figure)\b.*?</\1>", page, flags=re.S)]


def test_every_thesis_table_or_figure_names_and_cites_the_thesis(cold):
    run_dir, _, index = cold
    page = _page(index)
    mentions = [b for b in _blocks(page) if re.search(r"Table 7\.\d|Figs?\. 7\.\d", b)]
    assert len(mentions) >= 3  # Table 7.1, Fig. 7.6, Fig. 7.7 / 7.9 at least
    for block in mentions:
        assert CITATION.replace('"', "&quot;").replace("'", "&#x27;") in block, block[:300]
    for md in (run_dir / "report" / "tables").glob("*.md"):
        text = md.read_text(encoding="utf-8")
        if re.search(r"Table 7\.\d|Figs?\. 7\.\d", text):
            assert CITATION in text, md.name


def test_the_subscript_of_e_celk_is_explained(cold):
    page = _page(cold[2])
    lead = page[page.index('<p class="lead">'):page.index("</p>", page.index('<p class="lead">'))]
    assert "E<sub>celk</sub>" in lead and "celková" in lead and "total" in lead


def test_the_grids_say_why_they_show_their_photos_and_what_the_rank_is(cold, tmp_path):
    run_dir, _, index = cold
    page = _page(index)
    grid_part = page[page.index('id="grids"'):page.index('id="gallery-section"')]
    assert "top 5" in grid_part and "half" in grid_part and "--images" in grid_part
    assert "rank 1: the model&#x27;s top prediction" in grid_part
    assert grids.target_text("cup", 3.0) == "target: cup (rank 3)"
    # photos asked for are said to be asked for
    df = tables.load_records(run_dir)
    assert "asked for with --images" in grids.choice_note(df, [2])
    assert "top 5" in grids.choice_note(df, None)


def test_win_rate_reads_as_photos_won_of_photos_compared():
    card = pd.DataFrame({"method": ["gradient", "gradcam", "centre"], "Kind": ["method", "method", "baseline"],
                         "Mean P": [0.5, 0.4, 0.6], tables.WIN: [100 / 11, 62.5, float("nan")],
                         tables.WIN_PHOTOS: [11.0, 4.0, float("nan")]})
    shown = tables.card_for_display(card)
    assert shown[tables.WIN_CELL].tolist() == ["1 of 11", "2.5 of 4", "—"]  # a tie counts half


def _with_config(run_dir: Path, models: list[dict]) -> None:
    body = json.loads((run_dir / "config.json").read_text())
    body["config"]["models"] = models
    (run_dir / "config.json").write_text(json.dumps(body))


def test_an_automatic_layer_is_named_when_recorded_and_explained_when_not(tmp_path):
    run_dir = tmp_path / "run"
    records = make_run_dir(run_dir, images=((1, "dog"),), cnns=("efficientnet_lite0",), sizes=("224",))
    _with_config(run_dir, [{"name": "efficientnet_lite0", "gradcam_layer": "auto", "weights": None}])
    facts = dict(run_info(run_dir, tables.load_records(run_dir)).facts)
    assert "Grad-CAM layer auto)" not in facts["Models"]
    assert "chosen automatically" in facts["Models"] and "do not name it" in facts["Models"]
    for rec in records:  # what the worker records once it writes the layer it used
        rec["gradcam_layer"] = "_swish"
    rewrite_records(run_dir, records)
    facts = dict(run_info(run_dir, tables.load_records(run_dir)).facts)
    assert facts["Models"] == "EfficientNet-Lite0 (Grad-CAM layer _swish)"


def test_checks_that_did_not_run_are_not_described(cold, tmp_path):
    card = _page(cold[2])
    card = card[card.index('id="method-card"'):card.index('id="tables"')]
    for words in ("Deletion / insertion", "Randomisation:", "Input dependence:", "Class dependence:",
                  "validity checks", "input dependence ≥", "model randomisation ≥", "Spearman"):
        assert words not in card, words
    assert "no better than an edge detector" in card  # the edges baseline ran: its flag is explained
    # a run with the input-dependence check alone explains that one
    run_dir = tmp_path / "run"
    make_run_dir(run_dir, images=((1, "dog"), (2, "cat")), cnns=("resnet18",), sizes=("224",))
    write_checks(run_dir, [{"id": i, "class": c, "CNN": "resnet18", "size": "224", "method": m, "test": "input",
                            "measure": "spearman", "step": None, "value": 0.3, "steps": None, "seed": 0}
                           for i, c in ((1, "dog"), (2, "cat")) for m in ("gradient", "gradcam")])
    page = _page(write_report(run_dir))
    card = page[page.index('id="method-card"'):page.index('id="tables"')]
    assert "Input dependence:" in card and "input dependence ≥" in card and "Spearman" in card
    for words in ("Deletion / insertion", "Randomisation:", "Class dependence:", "edge detector"):
        assert words not in card, words


@pytest.mark.slow
def test_figures_are_logged_once(tmp_path, caplog):
    run_dir = tmp_path / "run"
    make_run_dir(run_dir, images=((1, "dog"), (2, "cat")), cnns=("resnet18",), sizes=("224",), rank_of=lambda i, c, n: i * 4)
    with caplog.at_level(logging.INFO, logger="xcnn.report"):
        write_report(run_dir)
    lines = [r.getMessage() for r in caplog.records if "figures" in r.getMessage() and "wrote" in r.getMessage()]
    n_png = len(list((run_dir / "report" / "figures").glob("*.png")))
    assert lines == [f"wrote {n_png} figures to {run_dir / 'report' / 'figures'}"]  # two views, one line


@pytest.mark.slow
def test_the_folder_travels_light_and_eps_comes_on_request(cold, tmp_path):
    run_dir, _, _ = cold
    report = run_dir / "report"
    assert not list(report.rglob("*.eps"))
    assert {p.suffix for p in (report / "figures").iterdir()} == {".png", ".svg"}
    assert {p.suffix for p in (report / "grids").iterdir()} == {".webp"}
    assert {p.suffix for p in (report / "maps").rglob("*") if p.is_file()} == {".webp"}
    assert {p.suffix for p in (report / "photos").rglob("*") if p.is_file()} == {".webp"}
    other = tmp_path / "eps"
    make_run_dir(other, images=((1, "dog"),), cnns=("resnet18",), sizes=("224",))
    assert report_main([str(other), "--eps"]) == 0
    pngs = sorted(p.stem for p in (other / "report" / "figures").glob("*.png"))
    assert pngs and sorted(p.stem for p in (other / "report" / "figures").glob("*.eps")) == pngs
    page = _page(other / "report" / "index.html")
    assert page.count(">EPS</a>") == len(pngs)


def test_gallery_previews_are_small_webp(tmp_path):
    # A 320 px map picture (the largest a run writes) becomes a preview of at most PREVIEW_SIDE px.
    src = tmp_path / "map.jpg"
    Image.effect_noise((320, 240), 60).convert("RGB").save(src, quality=90)
    dest = tmp_path / "out" / "map.webp"
    assert files.preview(src, dest)
    with Image.open(dest) as im:
        assert im.format == "WEBP" and max(im.size) == files.PREVIEW_SIDE and im.size[1] == 120
    assert dest.stat().st_size < src.stat().st_size / 2
    assert not files.preview(tmp_path / "missing.jpg", tmp_path / "out" / "none.webp")


def test_run_passes_eps_to_the_report(monkeypatch, tmp_path):
    import xcnn.experiment as experiment
    import xcnn.report as report
    from xcnn.cli import build_parser

    seen = {}

    class Summary:
        records_total, failed, units_total = 1, 0, 1

    monkeypatch.setattr(experiment, "load_config", lambda path: object())
    monkeypatch.setattr(experiment, "run", lambda *a, **k: Summary())
    monkeypatch.setattr(report, "write_report", lambda out, **kw: seen.update(kw))
    args = build_parser().parse_args(["run", "c.toml", "--out", str(tmp_path / "r"), "--eps"])
    assert args.func(args) == 0 and seen == {"eps": True}
    args = build_parser().parse_args(["run", "c.toml", "--out", str(tmp_path / "r")])
    seen.clear()
    assert args.func(args) == 0 and seen == {"eps": False}


# --- the gallery's pages, in headless Chromium ---------------------------------------------------

PAGING_CHECK = """<script>
window.addEventListener('load',function(){
  var d=document.body.dataset,errors=[];
  window.addEventListener('error',function(e){errors.push(String(e.message));});
  function visible(){return Array.prototype.filter.call(document.querySelectorAll('#gallery .card'),
    function(c){return c.style.display!=='none';});}
  function pick(sel,value){var s=document.querySelector(sel);s.value=value;s.dispatchEvent(new Event('change'));}
  function click(what){document.querySelector('.controls [data-page='+what+']').click();}
  var page1=visible();
  d.cards=document.querySelectorAll('#gallery .card').length;
  d.onFirst=page1.length;d.labelFirst=document.querySelector('.controls .page-of').textContent;
  d.prevDisabled=document.querySelector('.controls [data-page=prev]').disabled;
  click('next');var page2=visible();
  d.onSecond=page2.length;d.labelSecond=document.querySelector('.controls .page-of').textContent;
  d.overlap=page2.filter(function(c){return page1.indexOf(c)>=0;}).length;
  d.nextDisabled=document.querySelector('.controls [data-page=next]').disabled;
  click('prev');d.back=visible()[0]===page1[0];
  pick('select[data-filter=size]','224');var f=visible();
  d.filtered=f.length;d.shown=document.getElementById('shown').textContent;
  d.filteredFromSecond=f.filter(function(c){return page1.indexOf(c)<0;}).length;
  d.filteredRight=f.every(function(c){return c.dataset.size==='224';});
  d.labelFiltered=document.querySelector('.controls .page-of').textContent;
  pick('select[data-filter=size]','');pick('#sort','p-asc');
  d.firstP=visible()[0].dataset.p;
  d.errors=errors.join(' | ');d.done='1';
});
</script></body>"""


@needs_chromium
def test_gallery_pages_of_60_with_filters_over_every_card(cold, tmp_path):
    run_dir, records, _ = cold
    copy = tmp_path / "copy"
    shutil.copytree(run_dir / "report", copy)
    check = copy / "paging.html"
    check.write_text(_page(copy / "index.html").replace("</body>", PAGING_CHECK), encoding="utf-8")
    result = _chromium(check.as_uri(), tmp_path, "--dump-dom")
    d = _body(result.stdout)
    assert d.get("done") == "1", result.stderr[-2000:]
    assert html.PAGE_SIZE == 60
    assert int(d["cards"]) == len(records) == 104
    assert (int(d["on-first"]), d["label-first"], d["prev-disabled"]) == (60, "page 1 of 2", "true")
    assert (int(d["on-second"]), d["label-second"], d["overlap"], d["next-disabled"]) == (44, "page 2 of 2", "0", "true")
    assert d["back"] == "true"
    n_224 = sum(r["size"] == "224" for r in records)
    assert int(d["filtered"]) == int(d["shown"]) == n_224 == 52  # every matching card, from both pages
    assert int(d["filtered-from-second"]) > 0 and d["filtered-right"] == "true"
    assert d["label-filtered"] == "page 1 of 1"
    assert float(d["first-p"]) == pytest.approx(min(r["P"] for r in records))  # sorted over every card
    assert d["errors"] == ""
