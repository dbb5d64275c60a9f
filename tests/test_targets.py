"""[data] targets: the COCO -> ImageNet table, the category's own label, or a map."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from xcnn import XcnnError
from xcnn.experiment import load_config, run
from xcnn.experiment.config import parse_config
from xcnn.experiment.targets import classes_for, parse_map
from xcnn.models import imagenet_categories

IMAGENET = imagenet_categories()
OWN = ["Cat", "dog", "bird"]


def _config(tmp_path: Path, data: str, model: str = 'name = "resnet18"\nweights = "random"') -> object:
    raw = f'[data]\ndemo = true\ncategories = ["cat", "dog"]\n{data}\n\n[[models]]\n{model}\n'
    return parse_config(tomllib.loads(raw), tmp_path / "c.toml")


def test_imagenet_rule_is_the_default_and_needs_an_imagenet_model() -> None:
    assert classes_for("imagenet", (), "traffic light", IMAGENET, None) == [920]
    with pytest.raises(XcnnError, match='needs an ImageNet-1k model, this one has 3 classes'):
        classes_for("imagenet", (), "cat", OWN, None)


def test_label_rule_matches_names_case_insensitively() -> None:
    assert classes_for("label", (), "cat", OWN, None) == [0]
    assert classes_for("label", (), "BIRD", OWN, None) == [2]
    wnids = [f"n{i}" for i in range(1000)]
    wnids[281] = "n02123045"
    assert classes_for("label", (), "n02123045", IMAGENET, wnids) == [281]
    with pytest.raises(XcnnError, match="'bat' is not one of the model's class names.*did you mean 'Cat'"):
        classes_for("label", (), "bat", OWN, None)


def test_map_rule_takes_names_wnids_and_indices(tmp_path: Path) -> None:
    table = parse_map({"Dog": ["n02085620", 3, "tabby"]}, "data.targets")
    wnids = [f"w{i}" for i in range(1000)]
    wnids[151] = "n02085620"
    assert classes_for("map", table, "dog", IMAGENET, wnids) == [3, 151, 281]
    with pytest.raises(XcnnError, match="'dgo' is not in the targets map; did you mean 'dog'"):
        classes_for("map", table, "dgo", IMAGENET, wnids)
    with pytest.raises(XcnnError, match="out of range"):
        classes_for("map", parse_map({"dog": 7}, "t"), "dog", OWN, None)


def test_config_reads_rules_and_refuses_unknown_categories(tmp_path: Path) -> None:
    assert _config(tmp_path, "").data.targets == "imagenet"
    assert "targets" not in _config(tmp_path, "").identity("d")  # older runs keep their identity
    label = _config(tmp_path, 'targets = "label"')
    assert label.data.targets == "label" and label.identity("d")["targets"] == "label"
    inline = _config(tmp_path, '[data.targets]\ncat = ["tabby", 282]\ndog = [151]')
    assert inline.data.target_map == (("cat", ("tabby", 282)), ("dog", (151,)))
    (tmp_path / "map.csv").write_text("category,classes\ncat,tabby;282\ndog,151\n")
    from_file = _config(tmp_path, 'targets = "map.csv"')
    assert from_file.data.target_map == inline.data.target_map and from_file.identity("d") == inline.identity("d")
    with pytest.raises(XcnnError, match="data.categories: category 'dog' is not in the targets map"):
        _config(tmp_path, '[data.targets]\ncat = ["tabby"]\ndgo = [151]')
    with pytest.raises(XcnnError, match='data.targets: .*"imagenet", "label" nor a CSV file'):
        _config(tmp_path, 'targets = "labels"')


def _run(tmp_path: Path, categories: list[str], targets: str) -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\ndemo = "{tmp_path / "demo"}"\ncategories = {categories!r}\nimages_per_category = 1\n'
                   f'{targets}\n\n[[models]]\nname = "python:tests.tiny_net:build"\nweights = "random"\n'
                   f'classes = {OWN!r}\n\n[run]\nsizes = [32]\nmethods = ["gradient", "gradcam"]\n')
    return cfg


def test_a_run_with_the_label_rule(tmp_path: Path) -> None:
    run(load_config(_run(tmp_path, ["cat", "dog", "bird"], 'targets = "label"')), tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert records and {r["target_rule"] for r in records} == {"label"}
    for r in records:
        assert r["target_name"].lower() == r["class"] and r["target"] == OWN.index(r["target_name"])
    assert "target_rule" in (tmp_path / "run" / "records.csv").read_text().splitlines()[0].split(",")


def test_unknown_label_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(XcnnError, match="'car' is not one of the model's class names"):
        run(load_config(_run(tmp_path, ["cat", "car"], 'targets = "label"')), tmp_path / "run")
    records = tmp_path / "run" / "records.jsonl"
    assert not records.exists() or not records.read_text()
