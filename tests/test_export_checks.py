"""checks.csv: one tidy row per value of the current config's checks, with the check's name and
its parameters' hash; rows of other settings stay in checks.jsonl but not in the export."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from xcnn.experiment.export import CHECK_FIELDS, current_checks, write_exports
from xcnn.experiment.store import JsonlStore, check_key
from xcnn.identity import identity_of_values


def _row(**kw: object) -> dict[str, object]:
    return {"id": 1, "class": "dog", "CNN": "m", "size": "224", "method": "gradient", "step": None, "seed": 0,
            "xcnn": "x", **kw}


def test_the_export_keeps_the_current_settings_with_check_and_params(tmp_path: Path) -> None:
    _, mine = identity_of_values({"share": 0.5, "photos": 3})
    rows = [_row(test="deletion", measure="auc", value=0.1, steps=10),  # 0.2's: no "check"
            _row(test="deletion", measure="prob", value=0.9, step=3, steps=10),
            _row(test="deletion", measure="auc", value=0.2, steps=20),  # another steps
            _row(test="keep_top", measure="prob", value=0.7, check="keep_top", params=mine),
            _row(test="keep_top", measure="prob", value=0.3, check="keep_top", params="000000000000"),
            _row(test="input", measure="spearman", value=0.4)]  # dependence: not on now, its rows kept
    store = JsonlStore(tmp_path / "checks.jsonl", key=check_key).open()
    store.append(rows)
    store.close()
    config = {"methods": ["gradient"], "checks": {"seed": 0, "enabled": [["faithfulness", {"steps": 10}],
                                                                       ["keep_top", {"share": 0.5, "photos": 3}]]}}
    (tmp_path / "config.json").write_text(json.dumps({"config": config}))
    kept = current_checks(tmp_path)
    assert sorted((r["check"], r["value"]) for r in kept) == [("dependence", 0.4), ("faithfulness", 0.1),
                                                              ("faithfulness", 0.9), ("keep_top", 0.7)]
    (tmp_path / "records.jsonl").write_text("")
    write_exports(tmp_path)
    with open(tmp_path / "checks.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == CHECK_FIELDS and len(table) == 4
    assert {r["step"] for r in table} == {"", "3"} and {r["steps"] for r in table} == {"10", ""}
    assert [r["params"] for r in table if r["check"] == "keep_top"] == [mine]


def test_config_json_lists_every_enabled_check_with_its_parameters(tmp_path: Path) -> None:
    from xcnn.experiment.config import load_config

    (tmp_path / "c.toml").write_text('[data]\ndemo = true\ncategories = ["dog"]\n[[models]]\nname = "resnet18"\n'
                                     '[checks]\nfaithfulness = true\nfaithfulness_steps = 7\ndependence = true\n'
                                     '[checks.road]\nphotos = 1\n')
    enabled = load_config(tmp_path / "c.toml").to_dict()["checks"]["enabled"]
    assert [name for name, _ in enabled] == ["faithfulness", "dependence", "road"]
    assert enabled[0][1] == {"steps": 7} and enabled[2][1]["photos"] == 1
