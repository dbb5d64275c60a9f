"""What a newcomer copies first: the class names --target takes, --classes for an own model, the
examples every --help gives (each one a tested command), and pictures that are never overwritten."""
from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xcnn import METHODS, XcnnError
from xcnn.cli import build_parser, main
from xcnn.cli.explain import parse_target
from xcnn.data.classes import class_index, imagenet_names, imagenet_wnids

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "python:tests.tiny_net:build", "--weights", "random"]


@pytest.mark.parametrize("text", ["281", "tabby cat", "tabby", "Tabby Cat", "n02123045"])
def test_target_takes_every_imagenet_spelling(text: str) -> None:
    assert parse_target(text, imagenet_names(), list(imagenet_wnids())) == 281


def test_an_ambiguous_or_unknown_class_name_is_refused_in_one_line() -> None:
    names, wnids = imagenet_names(), list(imagenet_wnids())
    # "crane" is a full name of the bird (134, "crane bird" to torchvision) and of the machine (517)
    with pytest.raises(XcnnError, match=r"names several .*134 \(n02012849\), 517 \(n03126707\)"):
        class_index("crane", names, wnids, "--target")
    with pytest.raises(XcnnError, match="did you mean 'tabby cat'") as err:
        parse_target("taby cat", names, wnids)
    assert "\n" not in str(err.value) and "--target" in str(err.value)
    # a model's own classes: its names only, no ImageNet synonyms
    assert class_index("Dog", ["cat", "dog"], None, "x") == 1
    with pytest.raises(XcnnError, match="not one of the model's class names"):
        class_index("tabby cat", ["cat", "dog"], None, "x")


def _photo(path: Path, side: int = 40) -> Path:
    Image.fromarray((np.random.default_rng(0).random((side, side, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_explain_an_own_model_with_its_classes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    photo = _photo(tmp_path / "p.png")
    code = main(["explain", str(photo), *TINY, "--methods", "gradient", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "--classes" in err  # the error names an option that exists
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\nbird\n")
    for given, out in [("cat,dog,bird", "a"), (str(classes), "b")]:
        assert main(["explain", str(photo), *TINY, "--classes", given, "--target", "Dog", "--mean", "0.5,0.5,0.5",
                     "--std", "0.25,0.25,0.25", "--methods", "gradient", "--out", str(tmp_path / out)]) == 0
        assert (tmp_path / out / "p-t1-gradient.png").is_file()
    with pytest.raises(SystemExit):
        main(["explain", str(photo), *TINY, "--mean", "0.5,nan,0.5"])
    assert "three numbers" in capsys.readouterr().err


def test_explain_never_overwrites_without_force(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    photo, out = _photo(tmp_path / "p.png", 64), tmp_path / "o"
    base = ["explain", str(photo), *TINY, "--classes", "cat,dog,bird", "--methods", "gradcam", "--out", str(out)]
    assert main([*base, "--target", "cat"]) == 0
    assert main([*base, "--target", "dog", "--size", "32"]) == 0  # another target and size: other names
    first, second = out / "p-t0-gradcam.png", out / "p-t1-s32-gradcam.png"
    assert first.is_file() and second.is_file() and Image.open(second).size == (32, 32)
    before = first.read_bytes()
    first.write_bytes(b"mine")
    assert main([*base, "--target", "0"]) == 2  # class 0 however it is named
    assert "p-t0-gradcam.png exists" in capsys.readouterr().err and first.read_bytes() == b"mine"
    assert main([*base, "--target", "cat", "--force"]) == 0 and first.read_bytes() == before


def test_version(capsys: pytest.CaptureFixture) -> None:
    import xcnn

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"xcnn {xcnn.__version__}"


# --- every example a --help gives is a command or value tested here ---------------------------

def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _parsers(sub)


def help_examples() -> set[str]:
    """Every "e.g. …" and "Example: …" fragment of every command's help, description and epilog."""
    found = set()
    for p in _parsers(build_parser()):
        texts = [p.description or "", p.epilog or ""]
        texts += [p._get_formatter()._expand_help(a) for a in p._actions if a.help]
        for text in texts:
            for m in re.finditer(r"(?:e\.g\.|Example:)\s*([^;()]*?)\s*(?:[;()]|$)", " ".join(text.split())):
                found.add(m.group(1).rstrip("."))
    return found


TESTED = {  # example -> the test that runs it
    "xcnn explain cat.jpg --model mobilenet_v2 --out maps/": "test_top_level_example",
    "PHOTO-t281-s224-METHOD.png": "test_explain_help_examples",
    "train2017 or val2017": "test_data_coco_help_examples",
    '"traffic light,zebra"': "test_data_coco_help_examples",
    "configs/demo.toml": "test_run_help_example",
    "smoothgrad.samples=50": "test_param_help_example",
}


def test_every_help_example_is_tested() -> None:
    assert help_examples() == set(TESTED), "a --help example was added or changed: test it and list it in TESTED"
    assert all(name in globals() for name in TESTED.values())


@pytest.mark.slow
def test_top_level_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example of `xcnn --help`, word for word, on the demo set's cat photo (real offline weights)."""
    from xcnn.data import CocoDataset, demo

    (cat,), _ = CocoDataset(*demo.build(tmp_path / "demo")).select(["cat"], 1, seed=0)
    Image.open(cat.file).convert("RGB").save(tmp_path / "cat.jpg")
    monkeypatch.chdir(tmp_path)
    example = next(e for e in TESTED if e.startswith("xcnn explain"))
    assert main(example.split()[1:]) == 0
    assert {p.name for p in (tmp_path / "maps").iterdir()} == {f"cat-{m}.png" for m in (*METHODS, "all")}


def test_explain_help_examples(tmp_path: Path) -> None:
    """--target's examples (281, "tabby cat", "tabby", n02123045) all name 281, and a non-default
    target and size go into the names as the help's PHOTO-t281-s224-METHOD.png shows."""
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["explain"].format_help().split())
    for example in ("(281)", '"tabby cat"', '"tabby"', "(n02123045)"):
        assert example in help_text
        assert parse_target(example.strip('()"'), imagenet_names(), list(imagenet_wnids())) == 281
    photo = _photo(tmp_path / "PHOTO.png", 48)
    assert main(["explain", str(photo), "--model", "resnet18", "--weights", "random", "--target", "281",
                 "--size", "224", "--methods", "gradcam", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "PHOTO-t281-s224-gradcam.png").is_file()


def test_data_coco_help_examples() -> None:
    from xcnn.data.classes import usable_categories

    parser = build_parser()
    args = parser.parse_args(["data", "coco", "--root", "d", "--split", "val2017", "--categories", "traffic light,zebra"])
    assert args.split == "val2017"
    assert parser.parse_args(["data", "coco", "--root", "d", "--categories", "zebra"]).split == "train2017"
    assert {"traffic light", "zebra"} <= set(usable_categories())  # both examples are usable categories


def test_run_help_example() -> None:
    from xcnn.experiment import load_config

    assert load_config(ROOT / "configs/demo.toml").data.categories


def test_explain_a_photo_with_a_long_name(tmp_path: Path) -> None:
    photo = _photo(tmp_path / ("x" * 240 + ".png"))
    out = tmp_path / "o"
    assert main(["explain", str(photo), *TINY, "--classes", "cat,dog,bird", "--methods", "gradient,gradcam",
                 "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 3 and all(len(n.encode()) < 150 for n in names)


def test_param_help_example() -> None:
    """--param smoothgrad.samples=50 sets that parameter (the same as --smoothgrad-samples 50)."""
    from xcnn.cli.explain import method_params

    parser = build_parser()
    for extra in (["--param", "smoothgrad.samples=50"], ["--smoothgrad-samples", "50"]):
        args = parser.parse_args(["explain", "p.png", *extra])
        params = method_params(args, ["smoothgrad", "gradient"])
        assert params["smoothgrad"].samples == 50 and params["smoothgrad"].sigma == 0.15 and "gradient" not in params
    with pytest.raises(XcnnError, match="unknown parameter of smoothgrad; did you mean 'samples'"):
        method_params(parser.parse_args(["explain", "p.png", "--param", "smoothgrad.sample=5"]), ["smoothgrad"])
