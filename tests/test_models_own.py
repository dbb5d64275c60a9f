"""A user's own network (python:module:factory) and the checks every model passes on loading."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from xcnn import Explainer, XcnnError, models
from xcnn.experiment.config import load_config, parse_config

TINY = "python:tests.tiny_net:build"


def test_factory_with_classes_list_and_file(tmp_path: Path) -> None:
    lm = models.load(TINY, weights="random", classes=["cat", "dog", "bird"], mean=[0.5, 0.5, 0.5], std=[0.25] * 3)
    assert lm.categories == ["cat", "dog", "bird"] and lm.wnids is None and lm.std == (0.25, 0.25, 0.25)
    again = models.load(TINY, weights="random", classes=["cat", "dog", "bird"])  # seeded: same weights
    for k, v in again.model.state_dict().items():
        assert torch.equal(v, lm.model.state_dict()[k])
    file = tmp_path / "classes.txt"
    file.write_text("cat\ndog\n\nbird\n")
    assert models.load(TINY, weights="random", classes=file).categories == ["cat", "dog", "bird"]


def test_factory_without_classes_is_refused_in_one_line() -> None:
    with pytest.raises(XcnnError, match=r"has 3 outputs: give its class names") as err:
        models.load(TINY, weights="random")
    assert "\n" not in str(err.value)
    with pytest.raises(XcnnError, match="3 outputs but 2 class names"):
        models.load(TINY, weights="random", classes=["cat", "dog"])


@pytest.mark.parametrize("name, message", [
    ("python:tests.tiny_net:opaque", "no rectifier call is visible"),
    ("python:tests.tiny_net:spatial", "must return B×classes logits"),
    ("python:tests.tiny_net:nothing", "has no nothing"),
    ("python:tests.no_such_module:build", "cannot import"),
    ("python:build", "write python:package.module:factory"),
])
def test_refusals_are_one_line(name: str, message: str) -> None:
    with pytest.raises(XcnnError, match=message) as err:
        models.load(name, weights="random", classes=["a", "b", "c"])
    assert "\n" not in str(err.value)


def test_refusal_comes_before_any_work(tmp_path: Path) -> None:
    """The run's preflight loads each model: one whose ReLUs no hook sees (as in a scripted one) stops the run before a record."""
    from xcnn.experiment import run

    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\ndemo = true\ncategories = ["cat"]\nimages_per_category = 1\n\n'
                   '[[models]]\nname = "python:tests.tiny_net:opaque"\nclasses = ["cat", "dog", "bird"]\n\n'
                   '[run]\nsizes = [32]\nmethods = ["gradient"]\n')
    with pytest.raises(XcnnError, match="no rectifier call is visible"):
        run(load_config(cfg), tmp_path / "run")
    assert not (tmp_path / "run" / "records.jsonl").exists() or not (tmp_path / "run" / "records.jsonl").read_text()


def test_gelu_only_model_deconvnet_equals_gradient() -> None:
    lm = models.load("python:tests.tiny_net:gelu", weights="random", classes=["a", "b", "c"])
    with Explainer(lm.model) as ex:
        maps = ex.explain(torch.randn(2, 3, 16, 16), [0, 2], methods=["gradient", "deconvnet", "guided_backprop"])
    assert maps.rectifiers == 0 and maps.kept_activations == {"gelu": 2}
    assert torch.equal(maps.deconvnet, maps.gradient) and torch.equal(maps.guided_backprop, maps.gradient)


def test_config_keys_are_part_of_the_identity(tmp_path: Path) -> None:
    (tmp_path / "classes.txt").write_text("cat\ndog\nbird\n")

    def identity(extra: str) -> dict:
        raw = f'[data]\ndemo = true\ncategories = ["cat"]\ntargets = "label"\n\n[[models]]\nname = "{TINY}"\n{extra}\n'
        import tomllib

        return parse_config(tomllib.loads(raw), tmp_path / "c.toml").identity("d")["models"][TINY]

    base = identity('classes = "classes.txt"')
    assert base["classes"] == ["cat", "dog", "bird"]
    assert identity('classes = ["cat", "dog", "bird"]') == base  # a file and its list are the same
    assert identity('classes = ["cat", "dog", "bird"]\nmean = [0.5, 0.5, 0.5]') != base
    assert identity('classes = ["cat", "dog", "bird"]\nreshape = "nchw"') != base
    with pytest.raises(XcnnError, match="models\\[0\\].reshape"):
        identity('reshape = "chw"')
