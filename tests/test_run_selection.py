"""What a run says about its selection before it starts: every skipped photo with its reason
(RUN_DIR/skipped.jsonl), "all" photos per category, the checks it will run, and how many record
units it plans (config.json, read by the report of a killed run)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_faults_names import _folder
from xcnn.experiment import load_config, run

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(tmp_path: Path, per_category: str, checks: str = "") -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\nformat = "folder"\nroot = "{tmp_path / "data"}"\ncategories = ["cat", "dog"]\n'
                   f'images_per_category = {per_category}\ntargets = "label"\n\n'
                   f'[[models]]\nname = "python:tests.tiny_net:build"\nweights = "random"\n'
                   f'classes = ["cat", "dog", "bird"]\n\n'
                   f'[run]\nsizes = [32]\nmethods = ["gradient"]\ndevice = "cpu"\n{checks}')
    return cfg


def test_skipped_photos_are_listed_and_all_takes_every_usable_one(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    rows = [("p1.png", "cat"), ("p2.png", "cat"), ("p3.png", "cat"), ("p4.png", "dog"), ("bad.png", "dog")]
    _folder(tmp_path / "data", rows)
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(tmp_path / "data/masks/m4.png")  # bad.png: wrong size
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        summary = run(load_config(_config(tmp_path, '"all"', "[checks]\nbaselines = true\n")), out)
    assert summary.failed == 0
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert [(s["file"].rsplit("/", 1)[-1], s["category"]) for s in skipped] == [("bad.png", "dog")]
    assert "size" in json.dumps(skipped[0])
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert sorted({(r["id"], r["class"]) for r in records if r["CNN"] != "none"}) == sorted(rows[:4])
    # planned record units: 4 pairs x (the model + the baselines' "none") x 1 size
    assert json.loads((out / "config.json").read_text())["record_units"] == 8
    assert "checks: baselines" in caplog.text and "every usable photo per category" in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings and all("bad.png" in w for w in warnings)  # the wrong-size mask, and nothing else


def test_a_shortfall_is_logged_once_at_info(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _folder(tmp_path / "data", [("p1.png", "cat"), ("p2.png", "dog")])
    with caplog.at_level(logging.INFO):
        run(load_config(_config(tmp_path, "2")), tmp_path / "run")
    lines = [r for r in caplog.records if "fewer usable" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO and "cat 1, dog 1" in lines[0].getMessage()
    assert "checks: none" in caplog.text


def documented_record_fields() -> set[str]:
    """The field column of docs/ARCHITECTURE.md's records table ("a, b" rows name several)."""
    text = (Path(__file__).resolve().parents[1] / "docs/ARCHITECTURE.md").read_text(encoding="utf-8")
    table = text.split("## Records", 1)[1].split("\n## ", 1)[0]
    fields: set[str] = set()
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and cells[0] not in ("field", "---") and not cells[0].startswith("*"):
            fields |= {f.strip() for f in cells[0].split(",")}
    return fields


def test_the_records_table_of_the_docs_lists_every_field(tmp_path: Path) -> None:
    _folder(tmp_path / "data", [("p1.png", "cat"), ("p2.png", "dog")])
    cfg = _config(tmp_path, "1").read_text().replace('["gradient"]', '["gradient", "integrated_gradients"]')
    (tmp_path / "c.toml").write_text(cfg + "ig_steps = 2\n")
    run(load_config(tmp_path / "c.toml"), tmp_path / "run")
    keys = set().union(*(json.loads(line) for line in (tmp_path / "run/records.jsonl").read_text().splitlines()))
    assert keys == documented_record_fields()
