"""A plugin written only from docs/PLUGINS.md adds methods and a metric to a run, end to end
(config, run, records, records.csv, report), and a broken plugin is one line naming it.

Runs that load the plugin go through a subprocess: a plugin's registrations last for its
process, and this one's registry must stay the built-ins' for the other tests."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from xcnn import XcnnError, registry

ROOT = Path(__file__).resolve().parents[1]


def plugin_source() -> str:
    """The plugin module of docs/PLUGINS.md, as a reader saves it."""
    text = (ROOT / "docs" / "PLUGINS.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)[0]


def xcnn_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "xcnn", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def _tiny_dataset(root: Path) -> None:
    from tests.test_faults_names import _folder

    _folder(root, [("p1.png", "cat"), ("p2.png", "dog"), ("p3.png", "dog")])


@pytest.mark.slow
def test_the_documented_plugin_runs_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "mymethods.py").write_text(plugin_source())
    _tiny_dataset(tmp_path / "data")
    (tmp_path / "mine.toml").write_text(
        'plugins = ["mymethods"]\n\n[data]\nformat = "folder"\nroot = "data"\ncategories = ["cat", "dog"]\n'
        'images_per_category = 2\ntargets = "label"\n\n'
        '[[models]]\nname = "python:tests.tiny_net:build"\nweights = "random"\nclasses = ["cat", "dog", "bird"]\n\n'
        '[run]\nsizes = [48]\nmethods = ["gradient", "twice_gradient", "gradient_power"]\ndevice = "cpu"\n\n'
        '[methods.gradient_power]\npower = 1.5\n\n[checks]\nfaithfulness_photos = 2\n\n[checks.keep_top]\nshare = 0.2\n')
    done = xcnn_cli("run", "mine.toml", "--out", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    by = {(r["id"], r["class"], r["method"]): r for r in records}
    units = {(r["id"], r["class"]) for r in records}
    assert len(units) == 3 and len(records) == 9
    for unit in units:  # P is scale-free: twice the gradient has the gradient's P
        assert by[(*unit, "twice_gradient")]["P"] == pytest.approx(by[(*unit, "gradient")]["P"], rel=1e-6)
        assert by[(*unit, "twice_gradient")]["E_celk"] == pytest.approx(4 * by[(*unit, "gradient")]["E_celk"], rel=1e-5)
        assert by[(*unit, "gradient_power")]["peak"] > 0
    # the metric on every record: the total energy is E_celk by another name
    assert all(r["total_energy"] == pytest.approx(r["E_celk"], rel=1e-6) for r in records)
    with open(run / "records.csv", newline="") as f:
        header = next(csv.reader(f))
    assert {"total_energy", "peak"} <= set(header)
    page = (run / "report" / "index.html").read_text()
    assert "Twice the gradient" in page and "Gradient power" in page and "Total energy" in page
    # the check: one row per method on each of the first 2 pairs, with its parameters' hash
    rows = [json.loads(line) for line in (run / "checks.jsonl").read_text().splitlines()]
    assert {r["check"] for r in rows} == {"keep_top"} and len(rows) == 2 * 3
    assert all(0 <= r["value"] <= 1 and r["test"] == "keep_top" and len(r["params"]) == 12 for r in rows)
    assert "Probability, top pixels only" in page
    config = json.loads((run / "config.json").read_text())
    assert config["plugins"]["mymethods"].startswith("sha256:")
    # resumed: nothing to do; another share is another group of rows, computed next to the first
    same = xcnn_cli("run", "mine.toml", "--out", "run", cwd=tmp_path)
    assert same.returncode == 0 and len((run / "checks.jsonl").read_text().splitlines()) == 6, same.stderr[-2000:]
    (tmp_path / "mine.toml").write_text((tmp_path / "mine.toml").read_text().replace("share = 0.2", "share = 0.5"))
    other = xcnn_cli("run", "mine.toml", "--out", "run", cwd=tmp_path)
    assert other.returncode == 0, other.stderr[-2000:]
    rows = [json.loads(line) for line in (run / "checks.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and len({r["params"] for r in rows}) == 2
    assert config["identity"]["methods"]["gradient_power"] == {"power": 1.5}
    # a changed plugin parameter is another identity: refused, in one line
    (tmp_path / "mine.toml").write_text((tmp_path / "mine.toml").read_text().replace("1.5", "3.0"))
    again = xcnn_cli("run", "mine.toml", "--out", "run", cwd=tmp_path)
    assert again.returncode == 2 and "parameters of gradient_power" in again.stderr
    # and on the command line
    from PIL import Image

    Image.open(tmp_path / "data" / "p1.png").save(tmp_path / "p.png")
    shown = xcnn_cli("explain", "p.png", "--plugin", "mymethods", "--methods", "twice_gradient,gradient_power",
                     "--model", "python:tests.tiny_net:build", "--weights", "random", "--classes", "a,b,c",
                     "--gradient-power-power", "3", "--out", "maps", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert {p.name for p in (tmp_path / "maps").iterdir()} >= {"p-twice_gradient.png", "p-gradient_power.png"}


@pytest.fixture
def own_registry() -> Iterator[None]:
    """Registrations made in a test are forgotten after it."""
    methods, metrics, checks = dict(registry.methods()), dict(registry.metrics()), dict(registry.checks())
    modules = set(sys.modules)
    yield
    for table, saved in ((registry._METHODS, methods), (registry._METRICS, metrics), (registry._CHECKS, checks)):
        table.clear()
        table.update(saved)
    for name in set(sys.modules) - modules:
        if name.startswith("badplugin"):
            del sys.modules[name]


@pytest.mark.parametrize(("body", "expected"), [
    ("raise RuntimeError('boom')", r"plugin 'badplugin_0': importing it raised RuntimeError \(boom\)"),
    ("import sys\nsys.exit(3)", r"plugin 'badplugin_1': importing it raised SystemExit \(3\)"),
    ("import xcnn\n@xcnn.method('gradient', label='G', kind='signed')\ndef mine(ctx):\n    return ctx.images\n",
     r"badplugin_2: method 'gradient' \(mine\) is registered twice \(first by xcnn.methods.gradients\)"),
    ("import xcnn\n@xcnn.method('bad_kind', label='B', kind='colour')\ndef mine(ctx):\n    return ctx.images\n",
     r"badplugin_3: method 'bad_kind': kind 'colour' is not"),
    ("import xcnn\n@xcnn.metric('P', label='again')\ndef mine(maps, masks, ctx):\n    return maps.sum()\n",
     r"metric 'P' \(mine\) is registered twice"),
])
def test_a_broken_plugin_is_one_line_naming_it(tmp_path: Path, own_registry: None, body: str, expected: str,
                                               request: pytest.FixtureRequest) -> None:
    name = f"badplugin_{request.node.callspec.indices['body']}"
    (tmp_path / f"{name}.py").write_text(body)
    with pytest.raises(XcnnError, match=expected) as err:
        registry.load_plugins([name], tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(XcnnError, match="plugin 'nowhere' not found"):
        registry.load_plugins(["nowhere"], tmp_path)
    with pytest.raises(XcnnError, match="give a module name"):
        registry.load_plugins(["../outside"], tmp_path)


def test_a_method_of_the_wrong_shape_or_dtype_is_one_line(own_registry: None) -> None:
    from xcnn.engine import Explainer

    @registry.method("wrong_shape", label="Wrong", kind="heat")
    def wrong_shape(ctx):  # type: ignore[no-untyped-def]
        return ctx.images  # B×3×H×W, but a heat map is B×1×H×W

    @registry.method("wrong_dtype", label="Wrong dtype", kind="signed")
    def wrong_dtype(ctx):  # type: ignore[no-untyped-def]
        return ctx.images.long()

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    model(torch.zeros(1, 3, 8, 8))
    for name, got in (("wrong_shape", r"\(1, 3, 8, 8\) torch.float32"), ("wrong_dtype", r"\(1, 3, 8, 8\) torch.int64")):
        with pytest.raises(XcnnError, match=rf"method '{name}' \(tests.test_plugins.*{name}\) returned {got}"):
            Explainer(model, target_layer=None).explain(torch.zeros(1, 3, 8, 8), 0, methods=[name])


def test_run_with_layer_replaces_the_layers_output(own_registry: None) -> None:
    """A method that reruns the model with the CAM layer's output replaced (Ablation-CAM's need):
    with the layer's own activations the logits come back unchanged; zeroing a channel changes them
    exactly as a hand-made forward pass does."""
    from xcnn.engine import Explainer

    torch.manual_seed(0)
    conv, head = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Sequential(torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                                                         torch.nn.Flatten(), torch.nn.Linear(4, 3))
    model = torch.nn.Sequential(conv, head).eval()
    seen = {}

    @registry.method("probe_layer", label="Probe", kind="heat", needs_layer=True, extra_passes=True)
    def probe_layer(ctx):  # type: ignore[no-untyped-def]
        same = ctx.run_with_layer(ctx.activation, torch.arange(len(ctx.images)))
        ablated = ctx.activation.clone()
        ablated[:, 1] = 0
        seen.update(same=same, logits=ctx.logits, ablated=ctx.run_with_layer(ablated, torch.arange(len(ctx.images))),
                    by_hand=head(ablated), again=ctx.run(ctx.images))
        return torch.zeros(len(ctx.images), 1, *ctx.size)

    x = torch.randn(2, 3, 10, 10)
    Explainer(model, target_layer="0").explain(x, 0, methods=["probe_layer"])
    torch.testing.assert_close(seen["same"], seen["logits"])
    torch.testing.assert_close(seen["again"], seen["logits"])
    torch.testing.assert_close(seen["ablated"], seen["by_hand"])
    assert not torch.allclose(seen["ablated"], seen["logits"])


def test_the_randomisation_check_reads_the_records_layer_and_layout(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """One way to build an explainer: for a token model (a ViT, whose own CAM layer is its last
    block, read as tokens) the randomisation check's maps come from the layer and layout of the
    records'. 0.2 built that explainer by hand, without the layout: its CAMs read another layer."""
    pytest.importorskip("timm")
    from xcnn import engine
    from xcnn.experiment import load_config, run

    built: list[tuple[object, object]] = []
    original = engine.Explainer.__init__

    def spy(self, model, target_layer="auto", layout=None, **kw):  # type: ignore[no-untyped-def]
        built.append((target_layer, layout))
        original(self, model, target_layer, layout, **kw)

    monkeypatch.setattr(engine.Explainer, "__init__", spy)
    from tests.test_faults_names import _folder

    _folder(tmp_path / "data", [("p1.png", "cat"), ("p2.png", "dog")])
    (tmp_path / "vit.toml").write_text(
        '[data]\nformat = "folder"\nroot = "data"\ncategories = ["cat", "dog"]\n\n'
        '[[models]]\nname = "timm:vit_tiny_patch16_224"\nweights = "random"\n\n'
        '[run]\nsizes = [224]\nmethods = ["gradcam"]\ndevice = "cpu"\n\n'
        '[checks]\nrandomisation = true\nrandomisation_photos = 2\nrandomisation_steps = 1\n')
    summary = run(load_config(tmp_path / "vit.toml"), tmp_path / "run")
    assert summary.failed == 0 and summary.check_rows > 0
    assert len(built) >= 3 and set(built) == {("blocks.11", "tokens")}


def test_checks_are_turned_on_by_name_or_table_and_refused_in_one_line(own_registry: None, tmp_path: Path) -> None:
    """[checks] NAME = true gives a registered check its defaults, a [checks.NAME] table its
    parameters (a built-in's table sets 0.2's flat keys); anything else is one line."""
    from dataclasses import dataclass

    from xcnn.experiment.config import load_config

    @dataclass(frozen=True)
    class Share:
        share: float = 0.1
        photos: int = 3

    @registry.model_check("mine", label="Mine", scope="photos", params=Share)
    def mine(ctx):  # pragma: no cover - never run here
        return ()

    base = '[data]\ndemo = true\ncategories = ["dog"]\n[[models]]\nname = "resnet18"\n[checks]\n'

    def parse(text: str):
        (tmp_path / "c.toml").write_text(base + text)
        return load_config(tmp_path / "c.toml").checks

    assert parse("mine = true\n").enabled() == [("mine", Share())]
    got = parse("randomisation = true\n[checks.mine]\nshare = 0.5\n[checks.faithfulness]\nsteps = 7\n")
    assert [n for n, _ in got.enabled()] == ["faithfulness", "randomisation", "mine"]
    assert got.faithfulness_steps == 7 and dict(got.enabled())["mine"] == Share(share=0.5)
    assert got.scoped("photos") == [("randomisation", dict(got.enabled())["randomisation"]), ("mine", Share(0.5))]
    assert parse("mine = false\n").enabled() == []
    for text, expected in (("mine = 3\n", "checks.mine: expected true, false or a [checks.mine] table"),
                           ("[checks.mine]\nshare = \"a\"\n", "checks.mine.share: expected float"),
                           ("[checks.mine]\nsize = 1\n", "unknown parameter of mine"),
                           ("mien = true\n", "checks.mien: unknown key; did you mean 'mine'?")):
        with pytest.raises(XcnnError, match=re.escape(expected)) as err:
            parse(text)
        assert "\n" not in str(err.value)


def test_a_check_that_raises_or_yields_other_things_is_one_line(own_registry: None) -> None:
    from types import SimpleNamespace

    @registry.model_check("raising", label="R")
    def raising(ctx):
        raise ZeroDivisionError("boom")

    @registry.model_check("wrong_rows", label="W")
    def wrong_rows(ctx):
        yield (0, "gradient", "t", "m", 1.0)

    from xcnn.experiment.config import Checks, ModelSpec, Size
    from xcnn.experiment.explained import EngineParams, Explained, Targets
    from xcnn.experiment.jobs import RecordJob
    from xcnn.experiment.outputs import CheckSetup, check_rows
    from tests.tiny_net import build

    checks = Checks(others=(("raising", None), ("wrong_rows", None)))
    lm = SimpleNamespace(model=build(), categories=["dog", "b", "c"], wnids=None, device=torch.device("cpu"),
                         normalize=lambda x: x, explainer=lambda *a, **k: None)
    sample = SimpleNamespace(image_id=1, category="dog", file="p.png")
    unit = SimpleNamespace(sample=sample, photo=np.zeros((16, 16, 3), np.uint8), mask=np.ones((16, 16), bool))
    job = RecordJob(ModelSpec("m"), Size("16", (16, 16)), (sample,), ("gradient",))  # type: ignore[arg-type]
    out = Explained(maps={"gradient": np.ones((3, 16, 16), np.float32)}, ms={}, target=0)
    setup = CheckSetup(lm, None, job, checks, Targets("label"), EngineParams())  # type: ignore[arg-type]
    for name, expected in (("raising", "check 'raising' (tests.test_plugins) raised ZeroDivisionError: boom"),
                           ("wrong_rows", "check 'wrong_rows' (tests.test_plugins) must yield xcnn.CheckRow")):
        with pytest.raises(XcnnError, match=re.escape(expected)):
            check_rows(setup, [unit], [out], [(name, [0])])  # type: ignore[list-item]


def test_the_captum_style_classes_see_every_built_in_whoever_loads_the_registry_first() -> None:
    """The classes module is itself a built-in module, imported while the registry loads the
    others: it must still get a class for every built-in method (LRP's came after it by name)."""
    code = ("from xcnn import registry\nregistry.metrics()\nfrom xcnn.methods import classes\n"
            "missing = set(registry.method_names()) - set(classes.CLASSES)\nassert not missing, missing\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-1000:]
