"""The config's table dataclasses check their own values once, on construction, whoever builds
them (the TOML reader, a test, a script); the models' options and layouts are checked the same way."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from xcnn import XcnnError
from xcnn.experiment.config import Config, DataConfig, ModelSpec, RunConfig, Size, load_config, parse_size

BASE = '[data]\ndemo = true\ncategories = ["dog"]\n[[models]]\nname = "resnet18"\n'


def test_a_run_table_refuses_a_bad_device_or_size_however_it_is_built() -> None:
    with pytest.raises(XcnnError, match=r"device 'gpu': use \"cpu\""):
        RunConfig(device="gpu")
    run = RunConfig(device="cuda:1")
    with pytest.raises(XcnnError, match="device 'cuda:x'"):
        dataclasses.replace(run, device="cuda:x")
    with pytest.raises(XcnnError, match="a size is listed twice"):
        RunConfig(sizes=(Size("224", (224, 224)), Size("224", (224, 224))))
    with pytest.raises(XcnnError, match="between 8 and 8192"):
        Size("4", (4, 4))
    assert parse_size(4) is None and parse_size("240x320") == Size("240x320", (240, 320))
    assert parse_size("64") == Size("64", (64, 64))


def test_the_config_and_the_device_check_agree(tmp_path: Path) -> None:
    from xcnn.devices import check_device

    (tmp_path / "c.toml").write_text(BASE + '[run]\ndevice = "tpu"\n')
    with pytest.raises(XcnnError, match=r'c\.toml: run\.device: got \'tpu\'; use "cpu", "cuda", "cuda:N", "mps" or "auto"'):
        load_config(tmp_path / "c.toml")
    with pytest.raises(XcnnError, match="device 'tpu': use"):
        check_device("tpu")
    assert check_device("cuda:3") == "cuda:3"


def test_each_table_is_read_into_its_own_dataclass(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(BASE.replace('name = "resnet18"', 'name = "resnet18"\nreshape = "nchw"')
                                     + '[run]\nsizes = [32]\nbatch_size = 2\nig_steps = 7\n[metrics]\nauc = false\n'
                                     '[methods.smoothgrad]\nsamples = 3\n[checks]\nbaselines = true\n')
    config = load_config(tmp_path / "c.toml")
    assert config.data == DataConfig(("dog",), demo=True)
    assert config.models == (ModelSpec("resnet18", layout="nchw"),)
    assert config.run.sizes == (Size("32", (32, 32)),) and config.run.batch_size == 2 and config.run.options.ig_steps == 7
    assert config.metrics.off == ("auc",) and config.checks.baselines
    params = config.methods.method_params()
    assert params["smoothgrad"].samples == 3 and params["integrated_gradients"].steps == 7
    # config.json keeps 0.2's flat keys: the report and the exports read them
    flat = config.to_dict()
    assert flat["categories"] == ("dog",) and flat["sizes"] == ["32"] and flat["batch_size"] == 2
    assert flat["models"][0]["reshape"] == "nchw" and flat["metrics_off"] == ("auc",) and "layout" not in flat["models"][0]
    assert Config(config.data, config.models).run == RunConfig()


def test_model_options_are_checked_on_construction_and_load_takes_them() -> None:
    from xcnn import models
    from xcnn.models import ModelOptions

    with pytest.raises(XcnnError, match=r"mean \[nan, 0, 0\] must be three finite numbers"):
        ModelOptions(mean=[math.nan, 0, 0])
    with pytest.raises(XcnnError, match=r"reshape 'chw' is not one of 'tokens', 'nhwc', 'nchw'"):
        ModelOptions(layout="chw")
    with pytest.raises(XcnnError, match=r"model 'python:tests.tiny_net:build': std \[1, 1, 0\] must be three finite"):
        models.load("python:tests.tiny_net:build", weights="random", std=[1, 1, 0])
    opts = ModelOptions(mean=[0.5, 0.5, 0.5], classes=["cat", "dog", "bird"], layout="nchw")
    assert opts.mean == (0.5, 0.5, 0.5)
    lm = models.load("python:tests.tiny_net:build", weights="random", options=opts, std=[0.25] * 3)
    assert lm.mean == (0.5, 0.5, 0.5) and lm.std == (0.25, 0.25, 0.25) and lm.categories == ["cat", "dog", "bird"]


def test_one_list_of_layouts() -> None:
    from xcnn.engine import LAYOUTS as ENGINE_LAYOUTS
    from xcnn.layouts import LAYOUTS
    from xcnn.models import LAYOUTS as MODEL_LAYOUTS

    assert MODEL_LAYOUTS is LAYOUTS and ENGINE_LAYOUTS == (None, *LAYOUTS)
