"""run.max_target_rank: only units whose target ranks 1..K get maps and records; the others are
done (RUN_DIR/filtered.jsonl), resume like records, and the key is part of the run's identity."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from xcnn.cli import main
from xcnn.errors import XcnnError
from xcnn.experiment import load_config, read_records, run
from xcnn.experiment import worker as worker_module
from xcnn.experiment.config import compare_identity
from xcnn.experiment.runner import Summary
from tests.test_run import assert_same_exports, make_coco

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

CHECKS = """
[checks]
baselines = true
faithfulness = true
faithfulness_steps = 2
faithfulness_photos = 0
randomisation = true
randomisation_photos = 2
randomisation_steps = 2
dependence = true
dependence_photos = 4
"""


def write_config(path: Path, dataset: tuple[Path, Path], rank: Any = None, checks: bool = False) -> Path:
    """test_run's tiny config (random ResNet-18, 6 photos, sizes original and 48, batches of 2)."""
    line = "" if rank is None else f"max_target_rank = {rank}"
    path.write_text(f"""
[data]
ann_file = "{dataset[0]}"
image_dir = "{dataset[1]}"
categories = ["dog", "cat"]
images_per_category = 3
seed = 1

[[models]]
name = "resnet18"
weights = "random"

[run]
sizes = ["original", 48]
methods = ["gradient", "gradcam", "guided_gradcam"]
batch_size = 2
device = "cpu"
{line}
{CHECKS if checks else ""}""")
    return path


def unit(r: dict[str, Any]) -> tuple[str, str, str, str]:
    return (r["CNN"], str(r["size"]), str(r["id"]), r["class"])


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]



@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_coco(tmp_path_factory.mktemp("coco"))


@pytest.fixture(scope="module")
def unfiltered(tmp_path_factory: pytest.TempPathFactory, dataset: tuple[Path, Path]) -> Path:
    """An independent run without the filter: the ranks every unit has."""
    tmp = tmp_path_factory.mktemp("all")
    run(load_config(write_config(tmp / "cfg.toml", dataset)), tmp / "run")
    return tmp / "run"


@pytest.fixture(scope="module")
def k(unfiltered: Path) -> int:
    """A K that keeps some units and filters others. With random weights no target here is the
    top class (K = 1 would keep nothing), so K comes from the ranks the unfiltered run found."""
    ranks = sorted({unit(r): r["target_rank"] for r in read_records(unfiltered)}.values())
    value = ranks[len(ranks) // 4]
    assert 0 < sum(r <= value for r in ranks) < len(ranks)
    return value


@pytest.fixture(scope="module")
def filtered(tmp_path_factory: pytest.TempPathFactory, dataset: tuple[Path, Path], k: int) -> tuple[Path, Summary]:
    tmp = tmp_path_factory.mktemp("filtered")
    cfg = write_config(tmp / "cfg.toml", dataset, rank=k, checks=True)
    return tmp / "run", run(load_config(cfg), tmp / "run")


def test_records_are_the_unfiltered_runs_with_rank_at_most_k(unfiltered: Path, filtered: tuple[Path, Summary],
                                                             k: int) -> None:
    out, summary = filtered
    every = {(*unit(r), r["method"]): r for r in read_records(unfiltered)}
    records = read_records(out)
    kept = {(*unit(r), r["method"]): r for r in records if r["CNN"] != "none"}
    assert kept.keys() == {key for key, r in every.items() if r["target_rank"] <= k}
    for key, r in kept.items():
        ref = every[key]
        assert (r["target"], r["target_rank"], r["target_prob"]) == (ref["target"], ref["target_rank"], ref["target_prob"])
        # kept units may be explained without their filtered batch mates: equal to float rounding
        for field in ("P", "E", "E_celk", "rma"):
            assert math.isclose(r[field], ref[field], rel_tol=1e-5, abs_tol=1e-9), (key, field)
    # Baselines have no model and no rank: every (photo, category, size) keeps them.
    assert sum(r["CNN"] == "none" for r in records) == 6 * 2 * 3

    rows = lines(out / "filtered.jsonl")
    record_rows = [r for r in rows if "#" not in r["class"]]
    ranks = {unit(r): r["target_rank"] for r in every.values()}
    assert {unit(r) for r in record_rows} == {u for u, rank in ranks.items() if rank > k}
    assert all(r["target_rank"] == ranks[unit(r)] and r["max_target_rank"] == k for r in record_rows)
    assert summary.filtered == len(rows) == len({unit(r) for r in rows})
    assert summary.units_total == 6 * 2 * 2 + 2 + 4  # models resnet18 and none, two sizes; two check batches


def test_filtered_units_give_no_check_rows(filtered: tuple[Path, Summary], k: int) -> None:
    out, _ = filtered
    kept = {unit(r) for r in read_records(out) if r["CNN"] != "none"}
    rows = lines(out / "checks.jsonl")
    tests = {r["test"] for r in rows}
    assert tests == {"deletion", "insertion", "randomisation", "input", "class"}
    assert all(unit(r) in kept for r in rows)  # every check row is of a unit that has records
    checked = {unit(r) for r in rows if r["test"] in ("randomisation", "class")}
    dropped = {(r["CNN"], r["size"], str(r["id"]), r["class"].split("#")[0])
               for r in lines(out / "filtered.jsonl") if "#" in r["class"]}
    assert dropped and not checked & dropped


def test_rerun_computes_nothing(dataset: tuple[Path, Path], filtered: tuple[Path, Summary], k: int,
                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, first = filtered
    before = {f: (out / f).read_bytes() for f in ("records.jsonl", "filtered.jsonl", "checks.jsonl")}

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("no unit should be computed again")

    monkeypatch.setattr(worker_module, "explain_units", boom)
    again = run(load_config(write_config(tmp_path / "cfg.toml", dataset, rank=k, checks=True)), out)
    assert again.records == again.check_rows == 0 and again.units_done_before == again.units_total
    assert again.filtered == first.filtered
    assert {f: (out / f).read_bytes() for f in before} == before


def test_resume_after_losing_the_last_lines_gives_the_same_run(dataset: tuple[Path, Path],
                                                               filtered: tuple[Path, Summary], k: int,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(filtered[0], out)
    cut = {}
    for name in ("records.jsonl", "filtered.jsonl"):  # as if killed while writing each
        text = (out / name).read_text().splitlines(keepends=True)
        cut[name] = json.loads(text[-1])["_part"][1]  # the last group is torn: all of it is computed again
        (out / name).write_text("".join(text[:-1]))
    summary = run(load_config(write_config(tmp_path / "cfg.toml", dataset, rank=k, checks=True)), out)
    assert summary.records == cut["records.jsonl"] and summary.check_rows == 0
    assert summary.filtered == filtered[1].filtered
    assert (out / "filtered.jsonl").read_bytes() == (filtered[0] / "filtered.jsonl").read_bytes()
    assert_same_exports(out, filtered[0])  # bit for bit but the timings


def test_changing_max_target_rank_is_refused(dataset: tuple[Path, Path], unfiltered: Path,
                                             filtered: tuple[Path, Summary], k: int, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    out = filtered[0]
    for rank, folder in ((k + 1, out), (None, out), (k, unfiltered)):  # another K, none, K on a run without
        before = (folder / "records.jsonl").read_bytes()
        cfg = write_config(tmp_path / "other.toml", dataset, rank=rank)
        assert main(["run", str(cfg), "--out", str(folder), "--no-report"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "another max_target_rank" in err and "another --out" in err
        assert (folder / "records.jsonl").read_bytes() == before


def test_identity_without_the_key_is_unchanged(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    """A run folder made before the key existed (no max_target_rank in its identity) resumes."""
    old = load_config(write_config(tmp_path / "a.toml", dataset)).identity("d")
    assert "max_target_rank" not in old
    new = load_config(write_config(tmp_path / "b.toml", dataset, rank=3)).identity("d")
    assert new == {**old, "max_target_rank": 3}
    assert compare_identity(old, old) == [] and compare_identity(old, new) == ["max_target_rank"]


@pytest.mark.parametrize("value", ["0", "-1", '"3"', "2.5", "true"])
def test_a_bad_value_is_one_line_naming_the_key(dataset: tuple[Path, Path], tmp_path: Path, value: str) -> None:
    cfg = write_config(tmp_path / "cfg.toml", dataset, rank=value)
    with pytest.raises(XcnnError) as err:
        load_config(cfg)
    text = str(err.value)
    assert len(text.splitlines()) == 1 and "run.max_target_rank" in text and "whole number >= 1" in text
    assert str(cfg) in text
