"""The report and the exports take methods and metrics from the run's own descriptions
(config.json "registry"), never from the registry: plugin methods and metrics show up with no
report code and without torch; runs of 0.2 read the committed snapshot."""
from __future__ import annotations

import ast
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.report_fixture import make_run_dir, rewrite_records
from tests.test_report_no_torch import SCRIPT
from xcnn.errors import XcnnError
from xcnn.runfolder import descriptions
from xcnn.runfolder.reading import FIELDS

SRC = Path(__file__).resolve().parents[1] / "src" / "xcnn"

PLUGIN_METHOD = {"label": "Twice the gradient", "kind": "signed", "draw": "grey", "reference": "Doe et al. 2031",
                 "baseline": False, "fields": ["twice_norm"], "origin": "mymethods"}
PLUGIN_METRIC = {"label": "Total energy", "higher_is_better": False, "category": "complexity",
                 "paper": "Roe & Poe 2032", "fields": [], "origin": "mymetrics"}


def _registry(methods: dict, metrics: dict) -> dict:
    """A config.json "registry" as the runner writes it: sorted keys (the store's json.dumps)."""
    return json.loads(json.dumps({"methods": methods, "metrics": metrics}, sort_keys=True))


def test_snapshot_equals_the_live_registry():
    pytest.importorskip("torch")
    from xcnn import registry

    live = {n: m for n, m in registry.methods().items() if m.builtin}
    snap = descriptions.builtin()
    for name, m in snap.methods.items():
        assert name in live, f"{name} is in the snapshot of 0.2 but no longer a built-in"
        entry = live[name]
        assert (m.label, m.kind, m.draw, m.reference, m.baseline) == (
            entry.label, entry.kind, entry.draw, entry.reference, entry.baseline), name
    assert [n for n in live if n in snap.methods] == list(snap.methods)  # the thesis's order
    for name in descriptions.BUILTIN_METRICS:
        got, want = snap.metrics[name], registry.metrics()[name]
        assert (got.label, got.higher_is_better, got.fields) == (want.label, want.higher_is_better, want.fields)


def test_a_method_the_descriptions_lack_gets_its_name_in_words_and_goes_last():
    snapshot = json.loads(descriptions.SNAPSHOT.read_text())
    described = descriptions.parse(_registry({**snapshot["methods"], "twice_gradient": PLUGIN_METHOD}, {}), "x",
                                   ranked=True)
    assert described.label("twice_gradient") == "Twice the gradient"
    assert described.label("my_new_cam") == "My new cam" and not described.is_baseline("my_new_cam")
    assert described.method("my_new_cam").draw == "grey"
    # sorted keys on disk, yet 0.2's built-ins keep the thesis's order; plugins follow, baselines
    # after the methods, unknown names last
    assert described.order({"edges", "zzz", "twice_gradient", "smoothgrad", "gradcam", "gradient", "aaa"}) == [
        "gradient", "gradcam", "smoothgrad", "twice_gradient", "edges", "aaa", "zzz"]


def test_an_order_list_orders_the_methods():
    described = descriptions.parse({"methods": {"b": {"label": "B"}, "a": {"label": "A"}}, "order": ["b", "a"]},
                                   "x", ranked=True)
    assert described.order({"a", "b"}) == ["b", "a"]


def test_a_damaged_registry_is_one_line_naming_the_key(tmp_path):
    make_run_dir(tmp_path, images=((1, "dog"),), cnns=("resnet18",), sizes=("224",), methods=("gradient",))
    body = json.loads((tmp_path / "config.json").read_text())
    body["registry"] = {"methods": {"gradient": {"label": 3}}, "metrics": {}}
    (tmp_path / "config.json").write_text(json.dumps(body))
    with pytest.raises(XcnnError, match=r"config.json: 'registry.methods.gradient.label' is not a text") as err:
        descriptions.of_run(tmp_path)
    assert "\n" not in str(err.value)


def test_report_and_exports_import_neither_the_registry_nor_render():
    # The registry's tables import torch and know only this process's plugins; render asks the registry.
    banned = ("xcnn.methods", "xcnn.render", "xcnn.registry", "xcnn.engine", "torch")
    files = [*sorted((SRC / "report").glob("*.py")), SRC / "experiment" / "export.py",
             SRC / "experiment" / "descriptions.py"]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not any(name == b or name.startswith(b + ".") for b in banned), f"{path.name} imports {name}"


def test_grid_cells_are_as_large_as_the_runs_pictures():
    from xcnn import render
    from xcnn.report import grids

    assert grids.CELL_SIDE == render.PICTURE_SIDE


def _plugin_run(run_dir: Path) -> None:
    """A run with a plugin method and a plugin metric, as the runner writes it; two records
    were written before the metric existed (no field)."""
    records = make_run_dir(run_dir, images=((1, "dog"), (2, "cat")), cnns=("resnet18",), sizes=("224",),
                           methods=("gradient", "twice_gradient"), baselines=("uniform",))
    for i, rec in enumerate(records):
        if i >= 2:
            rec["total_energy"] = 10.0 + i
        if rec["method"] == "twice_gradient":
            rec["twice_norm"] = 2.0
    rewrite_records(run_dir, records)
    body = json.loads((run_dir / "config.json").read_text())
    snapshot = json.loads(descriptions.SNAPSHOT.read_text())
    body["registry"] = _registry({**snapshot["methods"], "twice_gradient": PLUGIN_METHOD},
                                 {**snapshot["metrics"], "total_energy": PLUGIN_METRIC})
    (run_dir / "config.json").write_text(json.dumps(body, sort_keys=True))


# The no-torch harness of test_report_no_torch, writing the exports first as the runner does.
EXPORTS_THEN_REPORT = SCRIPT.replace("from xcnn.cli.report import main",
                                     "from xcnn.experiment.export import write_exports\n"
                                     "write_exports(sys.argv[1])\n"
                                     "from xcnn.cli.report import main")


@pytest.mark.slow
def test_a_plugin_method_and_metric_reach_the_report_and_records_csv_without_torch(tmp_path):
    run_dir = tmp_path / "run"
    _plugin_run(run_dir)
    result = subprocess.run([sys.executable, "-c", EXPORTS_THEN_REPORT, str(run_dir)], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "IMPORTED [] []" in result.stdout
    page = (run_dir / "report" / "index.html").read_text()
    assert "Twice the gradient" in page and "Doe et al. 2031" in page
    assert ">Mean Total energy ↓</th>" in page  # a card column, its direction from the description
    assert "Roe &amp; Poe 2032" in page  # its paper in the caption
    with open(run_dir / "report" / "tables" / "method_card.csv", newline="") as f:
        card = {row["Method"]: row for row in csv.DictReader(f)}
    assert list(card) == ["Gradient", "Twice the gradient", "Uniform (baseline)"]
    assert card["Twice the gradient"]["Picture"] == "grey"
    # photo 1's method records predate the metric: left out of the mean
    assert float(card["Twice the gradient"]["Mean Total energy ↓"]) == pytest.approx(14.0)
    assert float(card["Gradient"]["Mean Total energy ↓"]) == pytest.approx(13.0)
    with open(run_dir / "report" / "tables" / "table_7_1_methods.csv", newline="") as f:
        assert "Mean Total energy ↓" in next(csv.reader(f))
    with open(run_dir / "records.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    assert header[:len(FIELDS)] == list(FIELDS) and header[len(FIELDS):] == ["total_energy", "twice_norm"]
    by_method = {(r["id"], r["method"]): r for r in rows}
    assert by_method[("1", "gradient")]["total_energy"] == ""  # written before the metric: null
    assert by_method[("2", "twice_gradient")]["total_energy"] == "14.0"


def test_a_run_without_descriptions_reads_as_before(tmp_path):
    # 0.2's runs: no "registry" key, the snapshot's words and no column beyond 0.2's
    make_run_dir(tmp_path, images=((1, "dog"),), cnns=("resnet18",), sizes=("224",),
                 methods=("gradient", "gradcam"), baselines=("uniform",))
    from xcnn.experiment.export import write_exports
    from xcnn.report import write_report

    write_exports(tmp_path)
    write_report(tmp_path)
    with open(tmp_path / "records.csv", newline="") as f:
        assert next(csv.reader(f)) == list(FIELDS)
    with open(tmp_path / "report" / "tables" / "method_card.csv", newline="") as f:
        card = list(csv.DictReader(f))
    assert [r["Method"] for r in card] == ["Gradient", "Grad-CAM", "Uniform (baseline)"]
    assert [r["Picture"] for r in card] == ["grey", "heat", "heat"]
    builtin = {f"{c}{ci}" for c in ("Mean P", "Mean lift") for ci in ("", " 95 % CI low", " 95 % CI high")}
    assert not any(c.startswith("Mean ") and c not in builtin for c in card[0])


def test_metric_order_is_kept_although_config_json_sorts_its_keys() -> None:
    from xcnn.runfolder.descriptions import parse

    registry = {"methods": {"gradient": {"label": "Gradient"}},
                "metrics": {"P": {"label": "P"}, "zeta": {"label": "Zeta"}, "alpha": {"label": "Alpha"}},
                "metric_order": ["P", "zeta", "alpha"]}
    assert list(parse(registry, "x: 'registry", ranked=True).metrics) == ["P", "zeta", "alpha"]
    assert [m.name for m in parse(registry, "x: 'registry", ranked=True).plugin_metrics()] == ["zeta", "alpha"]
