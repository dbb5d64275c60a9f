"""`xcnn run` end to end on a generated COCO-format fixture with a random-weight ResNet-18."""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pycocotools import mask as cocomask

from xcnn import render
from xcnn.cli import main
from xcnn.data import imagenet_classes
from xcnn.errors import XcnnError
from xcnn.experiment import load_config, load_maps, run
from xcnn.experiment import worker as worker_module

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("gradient", "deconvnet", "guided_backprop", "gradcam", "guided_gradcam")


# --- fixture: a tiny COCO-format dataset ----------------------------------------------------

def make_coco(root: Path, per_category: int = 3) -> tuple[Path, Path]:
    """Noise photos with one rectangle polygon each; odd ids 64×64, even ids 64×80."""
    rng = np.random.default_rng(0)
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    cats = [{"id": 18, "name": "dog", "supercategory": "animal"}, {"id": 17, "name": "cat", "supercategory": "animal"}]
    images, anns = [], []
    for i in range(1, 2 * per_category + 1):
        h, w = (64, 64) if i % 2 else (64, 80)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images_dir / f"{i:04d}.png")
        images.append({"id": i, "file_name": f"{i:04d}.png", "height": h, "width": w})
        x0, y0 = 6 + 3 * i, 10
        poly = [x0, y0, x0 + 20, y0, x0 + 20, y0 + 24, x0, y0 + 24]
        anns.append({"id": i, "image_id": i, "category_id": cats[i % 2]["id"], "iscrowd": 0,
                     "segmentation": [poly], "area": 480.0, "bbox": [x0, y0, 20, 24]})
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return ann_file, images_dir


def write_config(path: Path, ann_file: Path, image_dir: Path, seed: int = 1, per_category: int = 3,
                 extra_run: str = "") -> Path:
    path.write_text(f"""
[data]
ann_file = "{ann_file}"
image_dir = "{image_dir}"
categories = ["dog", "cat"]
images_per_category = {per_category}
seed = {seed}
min_area = 0.01

[[models]]
name = "resnet18"
weights = "random"

[run]
sizes = ["original", 48]
batch_size = 2
device = "cpu"
{extra_run}
""")
    return path



@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_coco(tmp_path_factory.mktemp("coco"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, dataset: tuple[Path, Path]) -> Path:
    """One uninterrupted run with --save-maps, shared by the tests that compare against it."""
    tmp = tmp_path_factory.mktemp("ref")
    cfg = write_config(tmp / "cfg.toml", *dataset)
    out = tmp / "run"
    run(load_config(cfg), out, save_maps=True)
    return out


# --- independent recomputation -------------------------------------------------------------

def kill_run_at(cfg: Path, out: Path, watched: Path, lines: int, timeout: float) -> bool:
    """Start `xcnn run` in a process and SIGKILL it once ``watched`` has ``lines`` lines;
    whether it was still running to be killed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "xcnn", "run", str(cfg), "--out", str(out), "--no-report"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if watched.exists() and watched.read_bytes().count(b"\n") >= lines:
            break
        time.sleep(0.002)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return killed


def assert_same_exports(run_dir: Path, reference: Path) -> None:
    """exp.json and records.csv equal bit for bit in every field but the timing ``ms``."""
    def exp(path: Path) -> dict:
        data = json.loads((path / "exp.json").read_text())
        return {g: [{k: v for k, v in r.items() if k != "ms"} for r in recs] for g, recs in data.items()}

    assert exp(run_dir) == exp(reference)
    a, b = pd.read_csv(run_dir / "records.csv"), pd.read_csv(reference / "records.csv")
    pd.testing.assert_frame_equal(a.drop(columns="ms"), b.drop(columns="ms"), check_exact=True)


def _dilate_by_hand(mask: np.ndarray, growth: float) -> np.ndarray:
    """Brute force: all pixels within the smallest radius whose disc union holds (1+g)·area pixels."""
    ys, xs = np.nonzero(mask)
    gy, gx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    d2 = ((gy.ravel()[:, None] - ys[None]) ** 2 + (gx.ravel()[:, None] - xs[None]) ** 2).min(axis=1)
    need = math.ceil(round((1 + growth) * mask.sum(), 6))
    for r2 in np.unique(d2):
        if (d2 <= r2).sum() >= need:
            return (d2 <= r2).reshape(mask.shape)
    raise AssertionError("unreachable")


def _mask_at(ann_file: Path, image_id: int, size: str) -> np.ndarray:
    data = json.loads(ann_file.read_text())
    info = next(i for i in data["images"] if i["id"] == image_id)
    ann = next(a for a in data["annotations"] if a["image_id"] == image_id)
    rle = cocomask.frPyObjects(ann["segmentation"], info["height"], info["width"])
    mask = _dilate_by_hand(cocomask.decode(cocomask.merge(rle)).astype(bool), 0.20)
    if size != "original":
        side = int(size)
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((side, side), Image.NEAREST)) > 127
    return mask


def test_records_match_an_independent_recomputation(reference: Path, dataset: tuple[Path, Path]) -> None:
    ann_file, _ = dataset
    records = pd.read_csv(reference / "records.csv")
    # 6 images (3 per category) × 2 sizes × 5 methods, one model
    assert len(records) == 60
    assert sorted(records.method.unique()) == sorted(METHODS)
    for (image_id, cls, size), unit in records.groupby(["id", "class", "size"]):
        size = str(size)
        mask = _mask_at(ann_file, int(image_id), size)
        maps = load_maps(reference / "maps" / "resnet18" / size / f"{image_id}_{cls}.npz")
        assert np.array_equal(maps["mask"], mask)
        assert unit.chance.iloc[0] == mask.mean()
        target = int(unit.target.iloc[0])
        assert target in imagenet_classes(cls) and unit.target_rank.iloc[0] >= 1
        assert (unit.height.iloc[0], unit.width.iloc[0]) == mask.shape
        for rec in unit.itertuples():
            m = maps[rec.method].astype(np.float64)
            energy = (m ** 2).sum(axis=0)
            p = energy[mask].sum() / energy.sum()
            assert rec.P == pytest.approx(p, rel=5e-3, abs=1e-4)  # float16 maps on disk
            assert rec.lift == pytest.approx(rec.P / rec.chance)
            rma = np.abs(m).sum(axis=0)[mask].sum() / np.abs(m).sum()
            assert rec.rma == pytest.approx(rma, rel=5e-3, abs=1e-4)
            assert (reference / rec.map_png).is_file() and (reference / rec.image_png).is_file()
            with Image.open(reference / rec.mask_png) as pic:
                assert max(pic.size) <= render.PICTURE_SIDE
    assert (records.group == np.where(records["size"].astype(str) == "original", "original", "resized")).all()


def test_exp_json_has_the_thesis_layout_and_is_strict_json(reference: Path) -> None:
    text = (reference / "exp.json").read_text()
    exp = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert set(exp) == {"original", "resized"}
    assert len(exp["original"]) == len(exp["resized"]) == 30
    for field in ("id", "class", "method", "CNN", "P", "E", "E_celk", "chance", "target_name"):
        assert field in exp["original"][0]


def test_same_seed_twice_gives_identical_exp_json(tmp_path: Path, dataset: tuple[Path, Path], reference: Path) -> None:
    cfg = write_config(tmp_path / "cfg.toml", *dataset)
    run(load_config(cfg), tmp_path / "again")
    assert_same_exports(tmp_path / "again", reference)


def test_a_config_whose_records_would_differ_is_refused(tmp_path: Path, dataset: tuple[Path, Path],
                                                        reference: Path, capsys: pytest.CaptureFixture) -> None:
    before = (reference / "records.jsonl").read_bytes()
    cfg = write_config(tmp_path / "other.toml", *dataset, extra_run="growth = 0.3")
    assert main(["run", str(cfg), "--out", str(reference), "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert "another growth" in err and str(cfg) in err and len(err.splitlines()) == 1
    assert (reference / "records.jsonl").read_bytes() == before


@pytest.mark.slow
def test_kill_9_at_several_points_then_rerun_gives_the_uninterrupted_result(
        tmp_path: Path, dataset: tuple[Path, Path], reference: Path) -> None:
    cfg = write_config(tmp_path / "cfg.toml", *dataset)
    out = tmp_path / "run"
    store = out / "records.jsonl"
    for k in (1, 22, 41):  # lines in the store when the process is killed
        assert kill_run_at(cfg, out, store, k, 120)
        assert not (out / "exp.json").exists()  # the exports come only at the very end
    assert store.read_bytes().count(b"\n") < 60
    run(load_config(cfg), out)
    assert_same_exports(out, reference)
    assert store.read_bytes().count(b"\n") == 60


def test_rerun_of_a_finished_run_computes_nothing(tmp_path: Path, dataset: tuple[Path, Path], reference: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(tmp_path / "cfg.toml", *dataset)
    before = (reference / "records.jsonl").read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("no unit should be computed again")

    monkeypatch.setattr(worker_module, "explain_units", boom)
    summary = run(load_config(cfg), reference, save_maps=True)
    assert summary.records == 0 and summary.units_done_before == 12
    assert (reference / "records.jsonl").read_bytes() == before


def test_per_unit_failures_are_recorded_and_the_run_goes_on(tmp_path: Path, dataset: tuple[Path, Path],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    real = worker_module.explain_units

    def flaky(ex, lm, units, *args):  # type: ignore[no-untyped-def]
        if any(u.sample.image_id == 3 for u in units):
            raise XcnnError("input too small for this model")
        results = real(ex, lm, units, *args)
        for unit, out in zip(units, results):
            if unit.sample.image_id == 4:
                out.maps["gradient"][:] = 0.0  # an all-zero map
        return results

    monkeypatch.setattr(worker_module, "explain_units", flaky)
    cfg = write_config(tmp_path / "cfg.toml", *dataset)
    out = tmp_path / "run"
    summary = run(load_config(cfg), out)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert sorted((f["id"], f["size"]) for f in failures) == [(3, "48"), (3, "original")]
    assert all("input too small" in f["reason"] for f in failures)
    assert sum(summary.failures.values()) == 2
    exp = json.loads((out / "exp.json").read_text())
    records = exp["original"] + exp["resized"]
    assert len(records) == 50 and not any(r["id"] == 3 for r in records)  # the other 5 images, all methods
    zero = [r for r in records if r["id"] == 4 and r["method"] == "gradient"]
    assert len(zero) == 2
    for r in zero:
        assert r["P"] is None and r["note"] == "all-zero map" and r["E_celk"] == 0.0 and r["pointing_hit"] is None
    assert all(r["P"] is not None for r in records if not (r["id"] == 4 and r["method"] == "gradient"))

    # The model error was transient: a rerun retries the failed units and completes the run.
    monkeypatch.setattr(worker_module, "explain_units", real)
    again = run(load_config(cfg), out)
    assert again.records == 10 and not again.failures
    assert (out / "failures.jsonl").read_text() == ""
    exp = json.loads((out / "exp.json").read_text())
    assert sum(r["id"] == 3 for r in exp["original"] + exp["resized"]) == 10


# --- config validation: one line, before any work ---------------------------------------------

@pytest.mark.parametrize("edit, expect", [
    (("[run]", "[run]\nbogus = 1"), "run.bogus: unknown key"),
    (("batch_size = 2", 'batch_size = "2"'), "run.batch_size"),
    (('name = "resnet18"', 'name = "resnet19"'), "models[0].name: unknown model 'resnet19'"),
    (('sizes = ["original", 48]', 'methods = ["gradient", "lrp"]\nsizes = ["original"]'), "run.methods"),
    (('categories = ["dog", "cat"]', 'categories = ["dog", "person"]'), "'person'"),
    (('sizes = ["original", 48]', 'sizes = ["original", "big"]'), "run.sizes"),
    (('seed = 1', 'seed = true'), "data.seed"),
])
def test_config_errors_are_one_line_naming_the_key(tmp_path: Path, dataset: tuple[Path, Path],
                                                   capsys: pytest.CaptureFixture, edit: tuple[str, str],
                                                   expect: str) -> None:
    cfg = write_config(tmp_path / "cfg.toml", *dataset)
    cfg.write_text(cfg.read_text().replace(*edit))
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err and str(cfg) in err
    assert not out.exists()  # refused before any work


def test_demo_and_thesis_configs_are_valid() -> None:
    demo = load_config(ROOT / "configs" / "demo.toml")
    assert demo.data.demo and [m.name for m in demo.models] == ["mobilenet_v2", "efficientnet_lite0"]
    assert [s.label for s in demo.run.sizes] == ["original", "224"]
    thesis = load_config(ROOT / "configs" / "thesis.toml")
    assert len(thesis.data.categories) == 6 and thesis.data.images_per_category == 30 and len(thesis.models) == 4
    assert "traffic light" in thesis.data.categories


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(XcnnError, match="not found"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.slow
def test_demo_command_ends_with_exp_json_and_the_report(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The README's main command, offline, with the real ImageNet weights of the demo models: no
    warning about itself, 0.2's numbers (tests/test_compat_v02.py), a report under 15 MB."""
    from tests.test_compat_v02 import assert_numbers_of_v02

    import torch

    from tests.test_compat_v02 import THREADS

    out = tmp_path / "demo"
    torch.set_num_threads(THREADS)  # as the committed numbers were made (the module runs one thread)
    with caplog.at_level(logging.INFO):
        assert main(["run", str(ROOT / "configs" / "demo.toml"), "--out", str(out)]) == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert_numbers_of_v02(out)
    assert sum(f.stat().st_size for f in (out / "report").rglob("*") if f.is_file()) < 15e6
    exp = json.loads((out / "exp.json").read_text())
    records = exp["original"] + exp["resized"]
    assert len(exp["original"]) == len(exp["resized"]) and records
    assert {r["CNN"] for r in records} == {"mobilenet_v2", "efficientnet_lite0", "none"}  # "none": the baselines
    finite = [r["P"] for r in records if r["P"] is not None]
    assert finite and all(0.0 <= p <= 1.0 for p in finite)
    assert (out / "report" / "index.html").is_file()
