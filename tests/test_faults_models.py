"""Hostile model entries: non-finite input statistics, factories that exit or escape their
package, and weights files that are not plain state dicts."""
from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.test_run import make_coco
from tests.tiny_net import CLASSES, build
from xcnn import XcnnError, models
from xcnn.cli import main
from xcnn.experiment.config import parse_config

TINY = "python:tests.tiny_net:build"


def _parse(tmp_path: Path, model_lines: str) -> object:
    raw = (f'[data]\ndemo = true\ncategories = ["cat"]\ntargets = "label"\n\n'
           f'[[models]]\nname = "{TINY}"\n{model_lines}\n')
    return parse_config(tomllib.loads(raw), tmp_path / "c.toml")


# --- defect 5: mean and std must be finite, std > 0 --------------------------------------------

@pytest.mark.parametrize("key, toml, values", [
    ("mean", "[nan, 0, 0]", [float("nan"), 0.0, 0.0]),
    ("mean", "[0, -inf, 0]", [0.0, float("-inf"), 0.0]),
    ("std", "[1, inf, 1]", [1.0, float("inf"), 1.0]),
    ("std", "[1, nan, 1]", [1.0, float("nan"), 1.0]),
    ("std", "[1, 0, 1]", [1.0, 0.0, 1.0]),
    ("std", "[1, -0.5, 1]", [1.0, -0.5, 1.0]),
])
def test_non_finite_mean_or_std_is_refused_in_one_line(tmp_path: Path, key: str, toml: str,
                                                        values: list[float]) -> None:
    with pytest.raises(XcnnError, match=rf"models\[0\]\.{key}: .*finite") as in_config:
        _parse(tmp_path, f"{key} = {toml}")
    with pytest.raises(XcnnError, match=rf"{key} .*finite") as in_python:
        models.load(TINY, weights="random", classes=CLASSES, **{key: values})
    for err in (in_config, in_python):
        assert "\n" not in str(err.value)
    # one check, one wording: the config's line ends with what models.load says
    assert str(in_config.value).endswith(str(in_python.value).split(": ", 1)[1])


def test_finite_statistics_still_pass(tmp_path: Path) -> None:
    spec = _parse(tmp_path, "mean = [0, 0.5, 1]\nstd = [0.25, 1, 2]").models[0]  # type: ignore[attr-defined]
    assert spec.mean == (0.0, 0.5, 1.0) and spec.std == (0.25, 1.0, 2.0)
    lm = models.load(TINY, weights="random", classes=CLASSES, mean=[0, 0.5, 1], std=[0.25, 1, 2])
    assert lm.mean == (0.0, 0.5, 1.0) and lm.std == (0.25, 1.0, 2.0)


# --- defect 8: a factory that exits, or fails on import ----------------------------------------

@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path for throwaway modules; they are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("hostile_"):
            del sys.modules[name]


@pytest.mark.parametrize("source, name, says", [
    ("", "python:sys:exit", "sys:exit() raised SystemExit"),
    ("import sys\ndef f():\n    sys.exit(3)\n", "python:hostile_exit:f", "hostile_exit:f() raised SystemExit (3)"),
    ("raise SystemExit(4)\n", "python:hostile_import_exit:f", "importing hostile_import_exit raised SystemExit (4)"),
    ("def f(:\n", "python:hostile_syntax:f", "importing hostile_syntax raised SyntaxError"),
    ("raise RuntimeError('no GPU here')\n", "python:hostile_raises:f", "importing hostile_raises raised RuntimeError"),
    ("f = 5\n", "python:hostile_value:f", "hostile_value:f is int, not a function"),
])
def test_user_code_that_exits_or_fails_is_one_line_naming_it(user_module: Path, source: str, name: str,
                                                            says: str) -> None:
    module = name.split(":")[1]
    if source:
        (user_module / f"{module}.py").write_text(source)
    with pytest.raises(XcnnError) as err:
        models.load(name, weights="random", classes=CLASSES)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_an_interrupt_in_a_factory_stays_an_interrupt(user_module: Path) -> None:
    (user_module / "hostile_interrupt.py").write_text("def f():\n    raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        models.load("python:hostile_interrupt:f", weights="random", classes=CLASSES)


def test_a_forward_that_exits_is_one_line(user_module: Path) -> None:
    (user_module / "hostile_forward.py").write_text(
        "import sys\nfrom torch import nn\n"
        "class Quit(nn.Linear):\n    def forward(self, x):\n        sys.exit(0)\n"
        "def f():\n    return Quit(3, 3)\n")
    with pytest.raises(XcnnError, match=r"fails on a 2×3×224×224 input \(SystemExit") as err:
        models.load("python:hostile_forward:f", weights="random", classes=CLASSES)
    assert "\n" not in str(err.value)


def test_run_with_an_exiting_factory_exits_2_not_0(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ann, images = make_coco(tmp_path / "coco", per_category=1)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\nann_file = "{ann}"\nimage_dir = "{images}"\ncategories = ["dog"]\n'
                   f'images_per_category = 1\ntargets = "label"\n\n'
                   f'[[models]]\nname = "python:sys:exit"\nclasses = ["dog", "cat", "bird"]\n\n'
                   f'[run]\nsizes = [32]\nmethods = ["gradient"]\ndevice = "cpu"\n')
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "python:sys:exit" in err and "SystemExit" in err
    assert not (out / "records.jsonl").exists() or not (out / "records.jsonl").read_text()


# --- defect 11: a module name that is not a dotted Python name ---------------------------------

@pytest.mark.parametrize("name", ["python:../../outside:f", "python:/etc/passwd:f", "python:.rel:f",
                                  "python:a..b:f", "python:my-nets:f"])
def test_a_module_path_is_refused_as_not_a_dotted_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(XcnnError, match="dotted Python name") as err:
        models.load(name, weights="random", classes=CLASSES)
    assert "\n" not in str(err.value)
    with pytest.raises(XcnnError, match=r"models\[0\]\.name: .*dotted Python name"):
        parse_config(tomllib.loads(f'[data]\ndemo = true\ncategories = ["cat"]\n\n[[models]]\nname = "{name}"\n'),
                     tmp_path / "c.toml")


# --- defect 12: weights files that are not a plain state dict ----------------------------------

@pytest.fixture(scope="module")
def net_state() -> dict[str, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)  # not the seed of weights="random": a load that fell back would show
        return build().state_dict()


def _same(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"model": sd, "optimizer": {"lr": 0.1}, "epoch": 3},
    lambda sd: {"state_dict": sd, "epoch": 3},
    lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {"state": {}}, "loss": 0.5},
    lambda sd: {f"module.{k}": v for k, v in sd.items()},  # saved from nn.DataParallel
    lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
], ids=["plain", "model", "state_dict", "model_state_dict", "module_prefix", "wrapped_and_prefixed"])
def test_common_checkpoint_wrappers_are_unwrapped(tmp_path: Path, net_state: dict[str, torch.Tensor],
                                                  wrap: object) -> None:
    file = tmp_path / "w.pt"
    torch.save(wrap(net_state), file)  # type: ignore[operator]
    lm = models.load(TINY, weights=file, classes=CLASSES)
    assert _same(lm.model, net_state)


@pytest.mark.parametrize("content, says", [
    ("whole_model", "holds a pickled torch.nn.modules.container.Sequential, not a state dict"),
    ("list", "holds a list, not a state dict"),
    ("tensor", "holds a tensor, not a state dict"),
    ("training_state", "holds a dict with keys 'epoch', 'optimizer', not a state dict"),
    ("text", "is not a file written by torch.save"),
    ("empty", "is not a file written by torch.save"),
])
def test_a_weights_file_that_is_not_a_state_dict_says_what_it_holds(tmp_path: Path, content: str,
                                                                   says: str) -> None:
    file = tmp_path / "w.pt"
    if content == "whole_model":
        torch.save(build(), file)
    elif content == "list":
        torch.save([torch.zeros(2)], file)
    elif content == "tensor":
        torch.save(torch.zeros(2), file)
    elif content == "training_state":
        torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, file)
    else:
        file.write_text("hello\n" if content == "text" else "")
    with pytest.raises(XcnnError) as err:
        models.load(TINY, weights=file, classes=CLASSES)
    message = str(err.value)
    assert says in message and str(file) in message and "model.state_dict()" in message, message
    assert "\n" not in message and "weights_only" not in message


def test_a_weights_path_that_is_missing_or_a_folder_is_an_input_error(tmp_path: Path) -> None:
    folder = tmp_path / "w.pt"
    folder.mkdir()
    with pytest.raises(XcnnError, match=r"weights file .*w\.pt is a folder; give a state-dict file") as err:
        models.load(TINY, weights=folder, classes=CLASSES)
    assert "\n" not in str(err.value) and "I/O" not in str(err.value)
    with pytest.raises(XcnnError, match=r"models\[0\]\.weights: .*w\.pt is a folder; give a state-dict file"):
        _parse(tmp_path, 'weights = "w.pt"')
    with pytest.raises(XcnnError, match=r"models\[0\]\.weights: .*gone\.pt does not exist"):
        _parse(tmp_path, 'weights = "gone.pt"')
    with pytest.raises(XcnnError, match=r"weights file .*gone\.pt does not exist"):
        models.load(TINY, weights=tmp_path / "gone.pt", classes=CLASSES)


@pytest.mark.parametrize("line, key", [('weights = "w\\u0000.pt"', "weights"), ('classes = "c\\u0000.txt"', "classes")])
def test_a_nul_byte_in_a_model_file_name_is_one_line(tmp_path: Path, line: str, key: str) -> None:
    with pytest.raises(XcnnError, match=rf"models\[0\]\.{key}: .*NUL byte") as err:
        _parse(tmp_path, line)
    assert "\n" not in str(err.value)


def test_weights_of_another_net_say_which_keys_do_not_fit(tmp_path: Path) -> None:
    file = tmp_path / "w.pt"
    state = build().state_dict()
    state["6.weight"] = torch.zeros(5, 8)  # a head for 5 classes, not 3
    state["extra.bias"] = torch.zeros(1)
    del state["0.bias"]
    torch.save(state, file)
    with pytest.raises(XcnnError) as err:
        models.load(TINY, weights=file, classes=CLASSES)
    message = str(err.value)
    assert "1 missing (first: 0.bias)" in message and "1 unexpected (first: extra.bias)" in message
    assert "6.weight (5, 8) vs (3, 8)" in message and "\n" not in message
