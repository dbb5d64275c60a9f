"""Faults of the report: a run killed or still running, a run whose every unit failed, a damaged
config.json, hostile names in the Markdown tables, records of methods the config no longer asks for."""
from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.report_fixture import make_run_dir, write_checks
from tests.test_run import ROOT
from xcnn.cli.report import main as report_main
from xcnn.errors import XcnnError
from xcnn.experiment.export import write_exports
from xcnn.experiment.store import RunLock
from xcnn.report import write_report

STARTED = "2026-12-01T10:00:00+0000"


def _small_run(run_dir: Path, **kw: object) -> None:
    """Two photos (dog, cat), one CNN, one size, two methods: 2 record units, no pictures."""
    args: dict = {"images": ((1, "dog"), (2, "cat")), "cnns": ("resnet18",), "sizes": ("224",),
                  "methods": ("gradient", "gradcam"), "pictures": False}
    make_run_dir(run_dir, **{**args, **kw})  # type: ignore[arg-type]


def _edit_config(run_dir: Path, drop: tuple[str, ...] = (), **changes: object) -> None:
    path = run_dir / "config.json"
    body = json.loads(path.read_text())
    for key in drop:
        body.pop(key, None)
    for key, value in changes.items():
        if key == "config":
            body["config"].update(value)
        else:
            body[key] = value
    path.write_text(json.dumps(body))


def _head(page: str) -> str:
    """The page up to its explanation of P: what a reader sees first."""
    return page[:page.index('class="lead"')]


# --- 6. an unfinished or running run says so -----------------------------------------------------

def test_a_killed_run_says_unfinished_n_of_m_first_on_the_page_and_on_the_console(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "run"
    _small_run(run)
    # killed after 2 of 6 units: config.json as the run wrote it at its start (no "finished")
    _edit_config(run, started=STARTED, record_units=6, config={"categories": ["bus", "cat", "dog"]})
    with caplog.at_level(logging.WARNING):
        page = write_report(run).read_text()
    assert "unfinished: 2 of 6 units done" in _head(page)
    assert "unfinished" in page[:page.index("</title>")]
    assert any("unfinished: 2 of 6 units done" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)
    assert "bus" in page  # the category the config asks for and no record has is named

    # the same records once the run has ended: no warning
    _edit_config(run, finished="2026-12-01T11:00:00+0000", record_units=2)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        page = write_report(run).read_text()
    assert "unfinished" not in page and "still running" not in page
    assert not [r for r in caplog.records if "unfinished" in r.getMessage()]


@pytest.mark.slow
def test_an_older_run_without_the_planned_count_says_unfinished_from_its_started_log(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _small_run(run)
    page = write_report(run).read_text()
    assert "unfinished" not in page  # no start mark, nothing left started: as finished as can be told
    (run / "started.jsonl").write_text(
        json.dumps({"CNN": "resnet18", "size": "224", "id": "3", "class": "dog", "event": "start"}) + "\n")
    head = _head(write_report(run).read_text())
    assert "unfinished: 2 units done" in head and "1 unit" in head


@pytest.mark.slow
def test_a_run_another_process_writes_says_still_running_and_its_own_lock_does_not(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _small_run(run)
    page = write_report(run).read_text()
    assert "still running" not in page and not (run / ".lock").exists()  # the report makes no lock

    code = ("import sys, time; from pathlib import Path; from xcnn.experiment.store import RunLock; "
            "l = RunLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        head = _head(write_report(run).read_text())
    finally:
        holder.kill()
        holder.wait()
    assert "still running" in head and f"pid {holder.pid}" in head

    # the report `xcnn run` writes at its end, while this process holds the lock
    _edit_config(run, started=STARTED, finished=STARTED)
    with RunLock(run):
        page = write_report(run).read_text()
    assert "still running" not in page and "unfinished" not in page


@pytest.mark.slow
def test_xcnn_run_reports_itself_finished_and_an_interrupted_rerun_unfinished(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    from tests.test_faults_run import _cfg
    from tests.test_run import make_coco
    from xcnn.cli import main
    from xcnn.experiment import worker as worker_module

    data = make_coco(tmp_path / "coco", per_category=1)
    out = tmp_path / "run"
    assert main(["run", str(_cfg(tmp_path, data, 'sizes = [48]\nmethods = ["gradient"]')), "--out", str(out)]) == 0
    page = (out / "report" / "index.html").read_text()
    assert "unfinished" not in page and "still running" not in page

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(worker_module, "explain_units", interrupted)
    more = _cfg(tmp_path, data, 'sizes = [48]\nmethods = ["gradient", "gradcam"]', name="more.toml")
    assert main(["run", str(more), "--out", str(out)]) == 130
    assert report_main([str(out)]) == 0
    head = _head((out / "report" / "index.html").read_text())
    assert re.search(r"unfinished: 0 of 2 units done", head)  # no unit has both methods yet; 2 planned (config.json)


# --- 9. a run whose every unit failed ---------------------------------------------------------------

def test_a_run_where_every_unit_failed_gets_a_report_that_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    _small_run(run)
    _edit_config(run, started=STARTED, finished=STARTED, record_units=3)
    (run / "records.jsonl").write_text("")
    reasons = ["input 8192×8192 is over run.max_pixels: lower run.sizes"] * 2 + ["photo unreadable: x.jpg"]
    (run / "failures.jsonl").write_text("".join(
        json.dumps({"CNN": "resnet18", "size": "8192", "id": i, "class": "dog", "file": f"{i}.jpg", "reason": r})
        + "\n" for i, r in enumerate(reasons)))
    assert report_main([str(run)]) == 0
    index = Path(capsys.readouterr().out.strip())
    page = index.read_text()
    assert "every unit failed" in _head(page).lower()
    assert "failures.jsonl" in page and "×2" in page and "photo unreadable" in page
    assert (index.parent / "failures.jsonl").read_text().count("\n") == 3  # the page's link works in report/


def test_a_run_with_no_record_and_no_failure_is_still_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _small_run(run)
    (run / "records.jsonl").write_text("")
    with pytest.raises(XcnnError, match="holds no records"):
        write_report(run)


# --- 11. a damaged config.json is one line ----------------------------------------------------------

@pytest.mark.parametrize("where, value, named", [
    ("config.models", 5, "'config.models'"),
    ("run_seconds", float("inf"), "'run_seconds'"),  # written 1e309, as a hand edit would
    ("hash", 7, "'hash'"),
    ("config.growth", "lots", "'config.growth'"),
    ("config.models", [{"name": "resnet18", "weights": ["a"]}], "'config.models[0].weights'"),
    ("config.categories", "dog", "'config.categories'"),
    ("record_units", -3, "'record_units'"),
    ("config", 1, "'config'"),
])
def test_a_wrong_type_in_config_json_is_one_line_naming_the_file_and_key(
        tmp_path: Path, capsys: pytest.CaptureFixture, where: str, value: object, named: str) -> None:
    run = tmp_path / "run"
    _small_run(run)
    body = json.loads((run / "config.json").read_text())
    *outer, key = where.split(".")
    (body[outer[0]] if outer else body)[key] = value
    (run / "config.json").write_text(json.dumps(body).replace("Infinity", "1e309"))
    assert report_main([str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"config.json: {named} is" in err, err
    assert not (run / "report").exists()


def test_a_config_json_nested_too_deep_is_read_as_unreadable_not_a_crash(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _small_run(run)
    (run / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    assert write_report(run).is_file()


# --- minor: hostile names in tables/*.md ----------------------------------------------------------

def test_markdown_tables_escape_html_and_pipes_in_names(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _small_run(run, images=((1, "<script>alert(1)</script>"), (2, "a|b")))
    md = (write_report(run).parent / "tables" / "table_by_category.md").read_text()
    assert "<script>" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "a\\|b" in md
    rows = [line for line in md.splitlines() if line.startswith("|")]
    cells = {len(re.findall(r"(?<!\\)\|", line)) for line in rows}
    assert len(cells) == 1  # every row has as many cells as the header


# --- minor: exports hold the config's methods only --------------------------------------------------

def test_exports_and_report_hold_only_the_methods_the_config_asks_for(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _small_run(run, methods=("gradient", "deconvnet", "gradcam"), baselines=("uniform",))
    write_checks(run, [{"id": 1, "class": "dog", "CNN": "resnet18", "size": "224", "method": m, "test": "input",
                        "measure": "spearman", "step": None, "value": 0.5, "steps": None, "seed": 0}
                       for m in ("gradient", "deconvnet")])
    _edit_config(run, config={"methods": ["gradient", "gradcam"], "checks": {"baselines": False}})
    before = (run / "records.jsonl").read_bytes()
    exp_path, csv_path = write_exports(run)
    methods = set(pd.read_csv(csv_path)["method"])
    assert methods == {"gradient", "gradcam"}
    exp = json.loads(exp_path.read_text())
    assert {r["method"] for group in exp.values() for r in group} == {"gradient", "gradcam"}
    assert set(pd.read_csv(run / "checks.csv")["method"]) == {"gradient"}
    assert (run / "records.jsonl").read_bytes() == before  # older records stay

    page = write_report(run).read_text()
    assert "4 records" in page and "left out" in page  # 2 Deconvnet + 2 uniform
    card = page[page.index('id="method-card"'):page.index('id="tables"')]
    assert "Deconvnet" not in card and "Uniform" not in card
