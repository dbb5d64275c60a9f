"""docs/CONFIG.md lists every key the config reader takes, each with the default the code uses."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from typing import Any

from xcnn.experiment import config
from xcnn.experiment.config._read import toml_keys
from xcnn.methods.registry import Options

PAGE = Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md"
REQUIRED = {("data", "categories"), ("models", "name")}


def documented() -> dict[str, dict[str, str]]:
    """{table: {key: default as written}} from the page's tables."""
    out: dict[str, dict[str, str]] = {}
    table = None
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"## `\[\[?(\w+)(?:\.NAME)?\]\]?`|## (Top level)", line)
        if heading:
            table = heading.group(1) or "top"
            out[table] = {}
        row = re.match(r"\| `([\w.]+)` \| (.+?) \|", line)
        if row and table:
            out[table][row.group(1)] = row.group(2)
    return out


def toml(value: Any) -> str:
    """A default as the page writes it: TOML, with None as "none"."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, (tuple, list)):
        return "`[" + ", ".join(toml(v).strip("`") for v in value) + "]`"
    return f"`{value}`"


def code_default(table: str, key: str) -> str:
    """A key's default as the table's dataclass (Options for [run]'s 0.2 method keys) has it."""
    if (table, key) in REQUIRED:
        return "required"
    owner: Any = config.TABLES[table]
    names = toml_keys(owner)
    if table == "run" and key in config.OPTION_KEYS:
        owner, names = Options, config.OPTION_KEYS
    value = {f.name: f.default for f in dataclasses.fields(owner)}[names[key]]
    if table == "run" and key == "sizes":  # Size objects, written as TOML writes them
        value = [int(s.label) if s.label.isdigit() else s.label for s in value]
    if table == "run" and key == "scorecam_top_k":
        value = value or 0  # the TOML form of "every channel"
    return toml(value)


def table_keys(table: str) -> set[str]:
    """The TOML keys a table's dataclass reads (its fields, [run] with the 0.2 method keys)."""
    return config.RunConfig.keys() if table == "run" else set(toml_keys(config.TABLES[table]))


def test_every_key_is_documented_with_its_code_default() -> None:
    page = documented()
    assert set(page) == {*config.TABLES, "top"}
    assert set(page["top"]) == config.TOP_KEYS and page["top"]["plugins"] == "`[]`"
    for table in ("data", "models", "run", "checks"):
        keys = table_keys(table)
        if table == "checks":  # and the registry's checks, below
            page[table] = {k: v for k, v in page[table].items() if k in keys}
        assert set(page[table]) == keys, f"[{table}] keys on the page differ from the code's"
        for key in keys:
            assert page[table][key] == code_default(table, key), f"{table}.{key}: the page's default is not the code's"

    assert toml(("original", 224)) == '`["original", 224]`' and toml(None) == "none"


@pytest.mark.parametrize("table", ["data", "models", "run"])
def test_the_reader_takes_exactly_the_documented_keys(tmp_path: Path, table: str) -> None:
    """An unknown key's error lists the keys the reader takes: the page's, no more, no fewer."""
    from xcnn.errors import XcnnError

    tables = {"data": '[data]\ndemo = true\ncategories = ["dog"]\n', "models": '[[models]]\nname = "resnet18"\n',
              "run": "[run]\n"}
    tables[table] += "bogus_key = 1\n"
    (tmp_path / "c.toml").write_text("".join(tables.values()))
    with pytest.raises(XcnnError, match=rf"{table}(\[0\])?\.bogus_key: unknown key") as err:
        config.load_config(tmp_path / "c.toml")
    listed = set(str(err.value).split("known: ")[1].split(", "))
    assert listed == set(documented()[table]) == table_keys(table)


def test_every_methods_parameter_and_metric_is_documented() -> None:
    from xcnn import registry

    page = documented()
    params = {f"{name}.{f.name}": toml(f.default) for name, m in registry.methods().items()
              if m.params is not None and m.builtin for f in dataclasses.fields(m.params)}
    assert page["methods"] == params
    builtin = {name: m for name, m in registry.metrics().items() if m.origin.startswith("xcnn.")}
    metric_params = {f"{name}.{f.name}": toml(f.default) for name, m in builtin.items()
                     if m.params is not None for f in dataclasses.fields(m.params)}
    assert page["metrics"] == {**{name: "`true`" for name in builtin}, **metric_params}


def test_a_metric_parameter_is_read_from_its_table_and_a_changed_one_is_another_identity(tmp_path: Path) -> None:
    from xcnn.errors import XcnnError
    from xcnn.metrics.localisation import TopKParams

    base = '[data]\ndemo = true\ncategories = ["dog"]\n[[models]]\nname = "resnet18"\n'

    def load(text: str) -> config.Config:
        (tmp_path / "c.toml").write_text(base + text)
        return config.load_config(tmp_path / "c.toml")

    default, changed = load(""), load("[metrics.top_k_intersection]\nk = 500\n")
    assert dict(changed.metrics.params)["top_k_intersection"] == TopKParams(500)
    assert "metrics" not in default.identity("d") and changed.identity("d")["metrics"] == {"top_k_intersection": {"k": 500}}
    assert config.compare_identity(default.identity("d"), changed.identity("d")) == [
        "parameters of metric top_k_intersection"]
    assert config.compare_identity(default.identity("d"), load("[metrics]\nauc = false\n").identity("d")) == []
    with pytest.raises(XcnnError, match=r"metrics\.top_k_intersection: top_k_intersection k must be a whole number"):
        load("[metrics.top_k_intersection]\nk = 0\n")


def test_every_built_in_check_and_its_parameters_are_documented() -> None:
    """[checks]: 0.2's flat keys, then every other built-in check of the registry by name, with
    its [checks.NAME] parameters."""
    from xcnn import registry

    page = documented()["checks"]
    others = {n: c for n, c in registry.checks().items() if c.origin.startswith("xcnn.")
              and n not in ("faithfulness", "randomisation", "dependence")}
    assert {k for k in page if "." not in k} == table_keys("checks") | set(others)
    params = {f"{n}.{f.name}": toml(f.default) for n, c in others.items() if c.params is not None
              for f in dataclasses.fields(c.params)}
    assert {k: v for k, v in page.items() if "." in k} == params
    assert all(page[n] == "`false`" for n in others)
