"""[checks]: baselines, faithfulness, randomisation and dependence, resumable like the records
(random-weight ResNet-18 on the tiny COCO fixture of test_run)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.test_run import ROOT, kill_run_at, make_coco
from xcnn.errors import XcnnError
from xcnn.experiment import load_config, run
from xcnn.experiment import worker as worker_module

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

CHECKS = """
[checks]
baselines = true
faithfulness = true
randomisation = true
dependence = true
faithfulness_steps = 4
randomisation_photos = 2
randomisation_steps = 2
dependence_photos = 3
"""


NO_BASELINES = CHECKS.replace("baselines = true", "baselines = false")


def config(path: Path, dataset: tuple[Path, Path], checks: str = CHECKS) -> Path:
    ann_file, image_dir = dataset
    path.write_text(f"""
[data]
ann_file = "{ann_file}"
image_dir = "{image_dir}"
categories = ["dog", "cat"]
images_per_category = 2
seed = 1

[[models]]
name = "resnet18"
weights = "random"

[run]
sizes = ["original", 48]
methods = ["gradient", "gradcam"]
batch_size = 2
device = "cpu"
{checks}
""")
    return path



@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_coco(tmp_path_factory.mktemp("coco"), per_category=2)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, dataset: tuple[Path, Path]) -> Path:
    tmp = tmp_path_factory.mktemp("ref")
    out = tmp / "run"
    run(load_config(config(tmp / "cfg.toml", dataset)), out)
    return out


def test_baselines_are_records_of_cnn_none_and_uniform_scores_chance(reference: Path) -> None:
    rec = pd.read_csv(reference / "records.csv")
    base = rec[rec.CNN == "none"]
    assert set(base.method) == {"uniform", "centre", "edges"}
    assert len(base) == 4 * 2 * 3  # photos × sizes × baselines
    assert base.target.isna().all() and base.ms.notna().all()
    uni = base[base.method == "uniform"]
    assert (uni.P - uni.chance).abs().max() < 1e-9
    assert len(rec[rec.CNN == "resnet18"]) == 4 * 2 * 2


def test_checks_jsonl_has_the_expected_rows(reference: Path) -> None:
    checks = pd.read_json(reference / "checks.jsonl", lines=True)
    csv = pd.read_csv(reference / "checks.csv")
    assert len(csv) == len(checks)
    assert set(checks.CNN) == {"resnet18"} and set(checks["size"].astype(str)) == {"48"}
    faith = csv[csv.test.isin(["deletion", "insertion"])]
    # 4 units × 2 methods × 2 tests × (auc + 5 curve points)
    assert len(faith) == 4 * 2 * 2 * 6
    assert faith[faith.measure == "auc"].step.isna().all()
    assert sorted(faith[faith.measure == "prob"].step.unique()) == [0, 1, 2, 3, 4]
    assert faith.value.between(0, 1).all()
    # known answer: step 0 of deletion (nothing deleted) is the record's target probability,
    # and so is the last step of insertion (everything put back)
    rec = pd.read_csv(reference / "records.csv")
    rec = rec[(rec.CNN == "resnet18") & (rec["size"].astype(str) == "48")]
    for _, r in rec.iterrows():
        mine = faith[(faith.id == r.id) & (faith.method == r.method)]
        d0 = mine[(mine.test == "deletion") & (mine.step == 0)].value.item()
        i4 = mine[(mine.test == "insertion") & (mine.step == 4)].value.item()
        assert d0 == pytest.approx(r.target_prob, rel=1e-4)
        assert i4 == pytest.approx(r.target_prob, rel=1e-4)
    rnd = csv[csv.test == "randomisation"]
    assert len(rnd) == 2 * 2 * 2 * 2  # photos × methods × steps × measures
    assert set(rnd.step) == {1, 2} and set(rnd.measure) == {"spearman", "ssim"}
    dep = csv[csv.test.isin(["input", "class"])]
    assert len(dep) == 3 * 2 * 2 * 2  # photos × methods × tests × measures
    assert dep.step.isna().all()
    assert (csv.seed == 0).all()


@pytest.mark.slow
def test_adding_checks_to_a_finished_run_writes_only_check_rows(tmp_path: Path, dataset: tuple[Path, Path],
                                                               reference: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    run(load_config(config(tmp_path / "plain.toml", dataset, checks="")), out)
    assert not (out / "checks.jsonl").exists() and not (out / "checks.csv").exists()
    before = (out / "records.jsonl").read_bytes()
    summary = run(load_config(config(tmp_path / "checks.toml", dataset, NO_BASELINES)), out)
    assert summary.records == 0 and summary.check_rows > 0
    assert (out / "records.jsonl").read_bytes() == before
    assert (out / "checks.csv").read_bytes() == (reference / "checks.csv").read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing should be computed again")

    monkeypatch.setattr(worker_module, "explain_units", boom)
    summary = run(load_config(config(tmp_path / "checks.toml", dataset, NO_BASELINES)), out)
    assert summary.records == 0 and summary.check_rows == 0
    # other parameters are other rows: more steps are wanted again
    monkeypatch.undo()
    summary = run(load_config(config(tmp_path / "more.toml", dataset, CHECKS.replace("= 4", "= 5").replace(
        "baselines = true", "baselines = false").replace("randomisation = true", "").replace("dependence = true", ""))),
        out)
    assert summary.records == 0 and summary.check_rows == 4 * 2 * 2 * 7
    assert (out / "records.jsonl").read_bytes() == before


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_gives_the_same_check_rows(tmp_path: Path, dataset: tuple[Path, Path],
                                                             reference: Path) -> None:
    cfg = config(tmp_path / "cfg.toml", dataset)
    out = tmp_path / "run"
    checks = out / "checks.jsonl"
    for more in (1, 60):  # new lines in checks.jsonl when the process is killed
        # counted from what the previous run left, so a slow machine (whose first kill lands late)
        # still kills the second run after it made progress, never twice in the same unit (a
        # unit killed twice is given up, by design)
        have = checks.read_bytes().count(b"\n") if checks.exists() else 0
        assert kill_run_at(cfg, out, checks, have + more, 180)
    run(load_config(cfg), out)
    assert (out / "checks.csv").read_bytes() == (reference / "checks.csv").read_bytes()
    mine, ref = (pd.read_csv(d / "records.csv").drop(columns="ms") for d in (out, reference))  # ms: timings
    pd.testing.assert_frame_equal(mine, ref)


def test_demo_config_checks_parse_and_unknown_keys_are_refused(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    demo = load_config(ROOT / "configs" / "demo.toml")
    c = demo.checks
    assert c.baselines and c.faithfulness and c.randomisation and c.dependence
    assert c.faithfulness_steps == 10 and c.faithfulness_photos == 4 and c.randomisation_photos == 4 \
        and c.dependence_photos == 8
    assert [s.label for s in demo.faithfulness_sizes()] == ["224"]
    assert "checks" not in demo.identity("x")
    assert load_config(config(tmp_path / "none.toml", dataset, checks="")).checks.any is False
    only = load_config(config(tmp_path / "one.toml", dataset, checks="[checks]\nbaselines = true\n")).checks
    assert only.baselines and not (only.faithfulness or only.randomisation or only.dependence)  # absent: off
    line = only.describe((), None)
    assert line == "checks: baselines"
    with pytest.raises(XcnnError, match=r"checks\.bogus: unknown key"):
        load_config(config(tmp_path / "bad.toml", dataset, "[checks]\nbogus = 1\n"))
    with pytest.raises(XcnnError, match=r"checks\.faithfulness_sizes"):
        load_config(config(tmp_path / "bad2.toml", dataset, '[checks]\nfaithfulness_sizes = [64]\n'))
    sized = load_config(config(tmp_path / "ok.toml", dataset,
                               '[checks]\nfaithfulness = true\nfaithfulness_sizes = ["original", 48]\n'))
    assert [s.label for s in sized.faithfulness_sizes()] == ["original", "48"]
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_baseline_ms_is_per_map_like_the_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    # The method card's "ms per map" column mixes baselines and methods: both must be per image.
    from types import SimpleNamespace

    import numpy as np

    from xcnn.experiment import worker

    clock = iter([10.0, 10.4])  # one baseline over a batch of 4 photos takes 0.4 s
    monkeypatch.setattr(worker.time, "perf_counter", lambda: next(clock))
    units = [SimpleNamespace(photo=np.zeros((8, 8, 3), np.uint8)) for _ in range(4)]
    out = worker.baseline_maps(["uniform"], units)  # type: ignore[arg-type]
    assert len(out) == 4 and out[0].ms["uniform"] == pytest.approx(100.0) and out[0].target is None


def test_a_check_batch_killed_twice_is_given_up_until_retry_killed(tmp_path: Path, dataset: tuple[Path, Path],
                                                                  reference: Path) -> None:
    # An out-of-memory kill inside a check (randomisation copies the model) must not kill every rerun.
    import json

    ref = pd.read_csv(reference / "checks.csv")
    victim = ref[ref.test == "randomisation"].iloc[0]
    out = tmp_path / "run"
    out.mkdir()
    start = {"CNN": "resnet18", "size": str(victim["size"]), "id": str(victim["id"]),
             "class": f"{victim['class']}#randomisation", "event": "start"}
    (out / "started.jsonl").write_text((json.dumps(start) + "\n") * 2)  # two runs died inside it
    cfg = load_config(config(tmp_path / "cfg.toml", dataset))
    summary = run(cfg, out)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [(str(f["id"]), f["class"]) for f in failures] == [(start["id"], start["class"])]
    assert "killed twice" in failures[0]["reason"] and summary.failed == 1
    rows = pd.read_csv(out / "checks.csv")
    assert "randomisation" not in set(rows.test) and {"input", "class", "deletion"} <= set(rows.test)
    assert run(cfg, out).check_rows == 0  # the rerun does not try it again ...
    retried = run(cfg, out, retry_killed=True)  # ... --retry-killed does, and gets the reference's rows
    assert retried.check_rows > 0 and not retried.failed
    key = ["id", "class", "CNN", "size", "method", "test", "step", "measure"]
    mine = pd.read_csv(out / "checks.csv").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, ref.sort_values(key).reset_index(drop=True))
