"""The record schema in code (xcnn.runfolder.records) against the docs and 0.2's JSON shape."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from xcnn.runfolder.records import RECORD_TABLE, Record, UnitResult, records_table, unit_key

ROOT = Path(__file__).resolve().parents[1]


def _record(**changes: object) -> Record:
    base = Record(id=7, file="a.jpg", category="dog", method="gradient", cnn="net", size="224", group="resized",
                  height=224, width=224, metrics={"P": 0.5, "E": 1.0, "E_celk": 2.0, "chance": 0.25,
                                                   "pointing_hit": True},
                  target=3, target_name="n3", target_rank=1, target_prob=0.9, target_rule="imagenet", top1=3,
                  top1_name="n3", ms=1.5, rectifiers=4, gradcam_layer=None, note="", image_png="i.jpg",
                  mask_png="m.png", map_png="p.jpg", xcnn="0.3", extras={"completeness": 0.01})
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_the_docs_records_table_is_the_one_in_code() -> None:
    text = (ROOT / "docs/ARCHITECTURE.md").read_text(encoding="utf-8")
    table = text.split("## Records", 1)[1].split("\n## ", 1)[0]
    assert records_table() in table


def test_every_record_field_is_documented() -> None:
    documented = {n.strip() for row in RECORD_TABLE if not row.names.startswith("*") for n in row.names.split(",")}
    keys = set(_record(metrics={}, extras={}).to_json())
    assert keys <= documented, keys - documented


def test_a_record_writes_0_2s_keys_in_0_2s_order() -> None:
    row = _record().to_json()
    assert list(row) == ["id", "file", "class", "method", "CNN", "size", "group", "height", "width",
                         "P", "E", "E_celk", "chance", "pointing_hit", "target", "target_name", "target_rank",
                         "target_prob", "target_rule", "top1", "top1_name", "ms", "rectifiers", "gradcam_layer",
                         "note", "image_png", "mask_png", "map_png", "xcnn", "schema", "completeness"]
    assert row["class"] == "dog" and row["CNN"] == "net" and row["schema"] == 2
    assert json.loads(json.dumps(row)) == row


def test_a_metric_named_like_a_later_field_keeps_its_place_and_loses_its_value() -> None:
    row = _record(metrics={"P": 0.5, "note": 1.0}).to_json()  # as 0.2's dict literal: the later key wins
    assert list(row).index("note") == list(row).index("P") + 1 and row["note"] == ""


def test_a_unit_key_reads_ids_as_text() -> None:
    row = _record().to_json()
    assert unit_key(row) == ("net", "224", "7", "dog")
    result = UnitResult(unit_key(row), [_record()])
    assert result.record_rows() == [row]


def test_the_store_writes_a_unit_result_as_records_json_and_a_failure_with_its_photo(tmp_path: Path) -> None:
    from xcnn.experiment.store import RunStore

    with RunStore(tmp_path / "run") as store:
        store.open_failures()
        assert store.add(UnitResult(("net", "224", "7", "dog"), [_record()], files={"pictures/a.jpg": b"x"})) == 1
        assert store.add(UnitResult(("net", "224", "7", "dog"), [_record()])) == 0  # already done
        assert store.add(UnitResult(("net", "224", "8", "dog"), failure="unreadable image: x", photo=(8, "b.jpg"))) == 0
    lines = [json.loads(line) for line in (tmp_path / "run/records.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "_part"} for r in lines] == [_record().to_json()]
    assert (tmp_path / "run/pictures/a.jpg").read_bytes() == b"x"
    failure = json.loads((tmp_path / "run/failures.jsonl").read_text())
    assert (failure["id"], failure["file"], failure["reason"]) == (8, "b.jpg", "unreadable image: x")
