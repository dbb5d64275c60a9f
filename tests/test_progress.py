"""Progress inside a batch: the multi-pass methods and the model checks report passes done of
passes planned, the run's bar shows them, and output to a file gets whole log lines, no bar."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_run import ROOT, make_coco
from tests.tiny_net import build
from xcnn.cli import main
from xcnn.engine import Explainer
from xcnn.experiment import load_config, progress, run
from xcnn.methods import passes
from xcnn.methods.registry import Options

pytestmark = pytest.mark.usefixtures("one_thread")

MULTIPASS = ["integrated_gradients", "smoothgrad", "scorecam"]


def _tiny_config(tmp_path: Path, checks: str = "") -> Path:
    """2 noise photos (64 px) of the tiny random-weight net, resized to 48, the multi-pass
    methods with few samples and a budget small enough to make several chunks."""
    ann, images = make_coco(tmp_path / "coco", per_category=1)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\nann_file = "{ann}"\nimage_dir = "{images}"\ncategories = ["dog", "cat"]\n'
                   f'images_per_category = 1\ntargets = "label"\n\n'
                   f'[[models]]\nname = "python:tests.tiny_net:build"\nweights = "random"\n'
                   f'classes = ["cat", "dog", "bird"]\n\n'
                   f'[run]\nsizes = [48]\nmethods = ["smoothgrad", "integrated_gradients"]\nbatch_size = 2\n'
                   f'device = "cpu"\nig_steps = 6\nsmoothgrad_samples = 5\nmemory_mb = 1\n\n{checks}')
    return cfg


def _assert_counts_up(calls: list[tuple[str, int, int]], label: str) -> int:
    """Every loop of ``label`` counts up from 0 to its plan, in more than one step; its plan."""
    loops = [[(d, p) for lab, d, p in calls if lab == label]]
    assert loops[0], f"no report of {label}: {sorted({c[0] for c in calls})}"
    planned = {p for _, p in loops[0]}
    counts = [d for d, _ in loops[0]]
    starts = [i for i, d in enumerate(counts) if d == 0] + [len(counts)]
    for a, b in zip(starts, starts[1:]):
        loop = counts[a:b]
        assert loop == sorted(set(loop)), f"{label} does not count up: {loop}"
        assert len(loop) > 2 and loop[-1] in planned, f"{label}: {loop} of {planned}"
    return max(planned)


def test_multipass_methods_report_passes_inside_one_call_and_maps_stay_bit_identical() -> None:
    torch.manual_seed(0)
    model = build()
    x = torch.randn(2, 3, 32, 32)
    options = Options(ig_steps=4, smoothgrad_samples=3, memory_mb=1)
    ex = Explainer(model, target_layer="2")
    plain = ex.explain(x, 1, methods=MULTIPASS, params=options, keys=["a", "b"])
    calls: list[tuple[str, int, int]] = []
    with passes.reporting(lambda *c: calls.append(c)):
        told = ex.explain(x, 1, methods=MULTIPASS, params=options, keys=["a", "b"])
    for m in MULTIPASS:
        assert torch.equal(plain.get(m), told.get(m))
    assert _assert_counts_up(calls, "integrated_gradients passes") == 2 * 4 + 1  # + the baseline
    assert _assert_counts_up(calls, "smoothgrad passes") == 2 * 3
    assert 2 <= _assert_counts_up(calls, "scorecam passes") <= 2 * 8 + 1  # a forward per channel and photo
    # a single-pass method makes no tally, and without a reporter nothing is told
    calls.clear()
    with passes.reporting(lambda *c: calls.append(c)):
        ex.explain(x, 1, methods=["gradient", "gradcam"])
    ex.explain(x, 1, methods=MULTIPASS, params=options, keys=["a", "b"])
    assert calls == []


def test_a_run_reports_method_and_check_passes_before_the_batch_is_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, int, int]] = []
    reporter = progress.Progress.passes
    store = progress.Progress.store

    def record_passes(self: progress.Progress, label: str, done: int, planned: int) -> None:
        events.append((label, done, planned))
        reporter(self, label, done, planned)

    def record_store(self: progress.Progress, *args: object) -> None:
        events.append(("units", self.summary.units_total, self.summary.units_total))
        store(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(progress.Progress, "passes", record_passes)
    monkeypatch.setattr(progress.Progress, "store", record_store)
    checks = ("[checks]\nfaithfulness = true\nfaithfulness_steps = 4\nrandomisation = true\n"
              "randomisation_steps = 3\ndependence = true\n")
    summary = run(load_config(_tiny_config(tmp_path, checks)), tmp_path / "run")
    assert summary.failed == 0 and summary.check_rows > 0
    calls = [e for e in events if e[0] != "units"]
    _assert_counts_up(calls, "smoothgrad passes")
    _assert_counts_up(calls, "integrated_gradients passes")
    # deletion / insertion: 3 end points a photo, then 2 curves of steps - 1 inner points a distinct map order
    faith = _assert_counts_up(calls, "deletion/insertion passes")
    assert faith > 3 * 2 and (faith - 3 * 2) % (2 * 3) == 0
    assert _assert_counts_up(calls, "randomisation steps") == 3
    assert [d for lab, d, _ in calls if lab == "dependence checks"] == [0, 1, 2]
    # the first batch's passes are told before its units are counted
    first_units = next(i for i, e in enumerate(events) if e[0] == "units")
    assert {e[0] for e in events[:first_units]} >= {"smoothgrad passes", "integrated_gradients passes"}


def test_a_terminal_shows_the_running_loop_on_the_bar(capsys: pytest.CaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "DRAW_EVERY", 0.0)
    bar = progress.PassBar(live=True)
    with passes.reporting(bar):
        outer = passes.Tally("randomisation steps", 3)
        outer.add()
        inner = passes.Tally("scorecam passes", 512)
        inner.add(120)
        bar.close()
    err = capsys.readouterr().err
    assert "randomisation steps 1/3" in err and "scorecam passes" in err and "120/512" in err


def test_a_terminal_bar_is_redrawn_while_one_long_chunk_runs(capsys: pytest.CaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(progress, "HEARTBEAT", 0.05)
    bar = progress.PassBar(live=True)
    with passes.reporting(bar):
        passes.Tally("scorecam passes", 512)
        time.sleep(0.6)  # one chunk of passes: no report comes, the bar's clock still moves
    bar.close()
    frames = capsys.readouterr().err.count("0/512")
    assert frames >= 4, frames


def test_in_a_file_a_progress_line_comes_every_interval_while_one_long_chunk_runs(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(progress, "HEARTBEAT", 0.05)
    monkeypatch.setattr(progress, "LOG_EVERY", 0.15)
    bar = progress.PassBar(live=False, head=lambda: "0/8 units")
    with caplog.at_level(logging.INFO, logger="xcnn.experiment.progress"), passes.reporting(bar):
        passes.Tally("scorecam passes", 512)
        time.sleep(0.8)
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) >= 3 and set(lines) == {"progress: 0/8 units; scorecam passes 0/512"}, lines


def test_output_to_a_file_gets_progress_lines_not_a_bar(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         caplog: pytest.LogCaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)  # a line at every report, as after 30 s
    with caplog.at_level(logging.INFO, logger="xcnn.experiment.progress"):
        run(load_config(_tiny_config(tmp_path)), tmp_path / "run")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert any("units" in line and "smoothgrad passes" in line for line in lines), lines
    assert "\r" not in capsys.readouterr().err  # pytest's stderr is not a terminal: no bar drawn


@pytest.mark.slow
def test_xcnn_run_with_stderr_to_a_file_writes_whole_log_lines(tmp_path: Path) -> None:
    cfg = _tiny_config(tmp_path)
    log_file = tmp_path / "stderr.txt"
    with log_file.open("w") as err:
        done = subprocess.run([sys.executable, "-m", "xcnn", "run", str(cfg), "--out", str(tmp_path / "run"),
                               "--no-report"], stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, timeout=300)
    text = log_file.read_text()
    assert done.returncode == 0, text[-2000:]
    assert "\r" not in text and "xcnn run:" not in text, text[-2000:]
    lines = text.splitlines()
    assert sum(line.startswith("INFO ") for line in lines) >= 3
    assert all(line.startswith(("INFO ", "DEBUG ", "WARNING ")) for line in lines if "INFO " in line), text


def test_explain_shows_pass_progress_on_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    photo = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(photo)
    monkeypatch.setattr(progress, "DRAW_EVERY", 0.0)
    monkeypatch.setattr(progress, "live_terminal", lambda: True)
    assert main(["explain", str(photo), "--model", "python:tests.tiny_net:build", "--weights", "random",
                 "--classes", "cat,dog,bird", "--methods", "all", "--ig-steps", "4", "--smoothgrad-samples", "3",
                 "--memory-mb", "1", "--device", "cpu", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    for label in ("integrated_gradients passes", "smoothgrad passes", "scorecam passes"):
        assert label in err
