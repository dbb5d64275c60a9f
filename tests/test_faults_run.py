"""Faults of a run: concurrent runs, changed data, kills, errors that must not hide bugs."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_run import ROOT, make_coco, write_config
from xcnn.cli import main
from xcnn.experiment import load_config, run
from xcnn.experiment import worker as worker_module


@pytest.fixture()
def small(tmp_path: Path) -> tuple[Path, Path]:
    return make_coco(tmp_path / "coco", per_category=1)


def _cfg(tmp_path: Path, data: tuple[Path, Path], extra_run: str = "", name: str = "cfg.toml") -> Path:
    """The test_run config with one photo per category; ``extra_run`` lines replace its [run] keys."""
    path = write_config(tmp_path / name, *data, per_category=1)
    lines = path.read_text().splitlines()
    for new in extra_run.splitlines():
        key = new.split("=")[0].strip()
        lines = [line for line in lines if line.split("=")[0].strip() != key] + [new]
    path.write_text("\n".join(lines) + "\n")
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_second_run_on_a_locked_run_dir_is_one_line_naming_the_holder(
        tmp_path: Path, small: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    out.mkdir()
    code = ("import sys, time; from pathlib import Path; from xcnn.experiment.store import RunLock; "
            "l = RunLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert main(["run", str(_cfg(tmp_path, small)), "--out", str(out), "--no-report"]) == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"pid {holder.pid}" in err
    assert not (out / "records.jsonl").exists() and not (out / "config.json").exists()


def test_changed_masks_are_refused_moved_data_resumes_and_new_methods_add_only_themselves(
        tmp_path: Path, small: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    first = run(load_config(_cfg(tmp_path, small, 'methods = ["gradient"]')), out)
    assert first.records == 4 and all(r["xcnn"] for r in _lines(out / "records.jsonl"))

    # the same content in another folder: nothing to do
    moved = tmp_path / "moved"
    shutil.copytree(small[0].parent, moved)
    again = run(load_config(_cfg(tmp_path, (moved / "ann.json", moved / "images"), 'methods = ["gradient"]')), out)
    assert again.records == 0 and again.units_done_before == 4

    # one more method: only its records are computed
    more = run(load_config(_cfg(tmp_path, small, 'methods = ["gradient", "gradcam"]')), out)
    assert more.records == 4
    assert sorted(r["method"] for r in json.loads((out / "exp.json").read_text())["original"]) == \
        ["gradcam", "gradcam", "gradient", "gradient"]

    # edited masks: the stored records would be stale, so the run folder refuses the config
    data = json.loads(small[0].read_text())
    data["annotations"][0]["segmentation"] = [[1, 1, 30, 1, 30, 30, 1, 30]]
    small[0].write_text(json.dumps(data))
    before = (out / "records.jsonl").read_bytes()
    capsys.readouterr()
    assert main(["run", str(_cfg(tmp_path, small)), "--out", str(out), "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another data" in err
    assert (out / "records.jsonl").read_bytes() == before


def test_a_unit_killed_twice_is_recorded_as_failed_not_rerun(tmp_path: Path, small: tuple[Path, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(_cfg(tmp_path, small, 'sizes = [48]\nbatch_size = 1'))
    out = tmp_path / "run"
    out.mkdir()
    victim = {"CNN": "resnet18", "size": "48", "id": "1", "class": "cat", "event": "start"}
    (out / "started.jsonl").write_text((json.dumps(victim) + "\n") * 2)  # two runs died inside it
    summary = run(cfg, out)
    failures = _lines(out / "failures.jsonl")
    assert [(f["id"], f["class"]) for f in failures] == [(1, "cat")]
    assert "killed twice" in failures[0]["reason"] and "--retry-killed" in failures[0]["reason"]
    assert summary.failed == 1 and summary.records == 5
    assert not any(r["id"] == 1 for r in _lines(out / "records.jsonl"))
    # the rerun does not run it again; --retry-killed does
    assert run(cfg, out).records == 0
    retried = run(cfg, out, retry_killed=True)
    assert retried.records == 5 and not retried.failed


def test_exit_codes_3_for_data_failures_and_a_bug_is_not_swallowed(
        tmp_path: Path, small: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(tmp_path, small, 'sizes = [48]\nmethods = ["gradient"]')
    assert main(["run", str(cfg), "--out", str(tmp_path / "ok"), "--no-report"]) == 0
    # a pixel budget below the input size: every unit fails for a data reason, named with its knob
    # photos of 64×64 and 64×80 pass the selection; the 72×72 input size does not
    cfg = _cfg(tmp_path, small, 'sizes = [72]\nmethods = ["gradient"]\nmax_pixels = 5150', name="small.toml")
    assert main(["run", str(cfg), "--out", str(tmp_path / "budget"), "--no-report"]) == 3
    failures = _lines(tmp_path / "budget" / "failures.jsonl")
    assert failures and all("max_pixels" in f["reason"] for f in failures)

    def bug(*args: object) -> None:
        raise ZeroDivisionError("a bug in xcnn")

    monkeypatch.setattr(worker_module, "explain_units", bug)
    with pytest.raises(ZeroDivisionError):
        main(["run", str(_cfg(tmp_path, small, 'sizes = [48]')), "--out", str(tmp_path / "bug"), "--no-report"])
    assert not (tmp_path / "bug" / "failures.jsonl").read_text()  # a bug is not a data failure


def test_the_experiment_never_imports_the_report() -> None:
    code = ("import sys, xcnn.experiment.runner, xcnn.experiment.worker, xcnn.experiment.backends.local; "
            "print(sorted(m for m in sys.modules if m.startswith('xcnn.report')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("args, expect", [
    (["--size", "0"], "--size '0'"),
    (["--size", "-5"], "--size '-5'"),
    (["--size", "0x0"], "--size '0x0'"),
    (["--device", "bogus"], "device 'bogus'"),
    (["--size", "8"], "cannot explain a 8×8 input"),
])
def test_explain_misuse_is_one_line(tmp_path: Path, small: tuple[Path, Path], capsys: pytest.CaptureFixture,
                                    args: list[str], expect: str) -> None:
    photo = small[1] / "0001.png"
    code = main(["explain", str(photo), "--model", "efficientnet_lite0", "--weights", "random", "--methods",
                 "gradient", "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expect in err[0]


def test_explain_out_naming_a_file_fails_before_any_work(tmp_path: Path, small: tuple[Path, Path],
                                                         capsys: pytest.CaptureFixture) -> None:
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    assert main(["explain", str(small[1] / "0001.png"), "--out", str(taken)]) == 2
    assert "is a file" in capsys.readouterr().err and taken.read_text() == "keep me"
