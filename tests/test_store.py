"""The crash-safe record store: torn tails, incomplete units, atomic exports."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from xcnn.errors import XcnnError
from xcnn.experiment.store import JsonlStore, write_atomic

METHODS = ("a", "b", "c")


def _unit(image_id: int, p: float = 0.5) -> list[dict]:
    return [{"CNN": "net", "size": "224", "id": image_id, "class": "dog", "method": m, "P": p} for m in METHODS]


def _store(path: Path) -> JsonlStore:
    return JsonlStore(path, per_unit=len(METHODS))


def test_units_survive_reopen_and_nan_is_written_as_null(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    with _store(path) as store:
        store.append(_unit(1))
        store.append(_unit(2, p=math.nan))
    lines = path.read_text().splitlines()
    assert len(lines) == 6
    assert json.loads(lines[3])["P"] is None  # strict JSON: no bare NaN token
    assert "NaN" not in path.read_text()
    with _store(path) as again:
        assert again.done == {("net", "224", 1, "dog"), ("net", "224", 2, "dog")}
        assert len(again.read()) == 6


@pytest.mark.parametrize("cut", [1, 10, 40])
def test_torn_last_line_is_cut_away_and_its_unit_not_done(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "records.jsonl"
    with _store(path) as store:
        store.append(_unit(1))
    whole = path.read_bytes()
    torn = b"".join(json.dumps(r).encode() + b"\n" for r in _unit(2))
    path.write_bytes(whole + torn[:cut])  # the process died inside the write of unit 2
    with _store(path) as store:
        assert store.done == {("net", "224", 1, "dog")}
        assert path.read_bytes() == whole
        store.append(_unit(2))
    assert [r["id"] for r in _store(path).read()] == [1, 1, 1, 2, 2, 2]


def test_unit_with_whole_lines_but_missing_methods_is_not_done(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    with _store(path) as store:
        store.append(_unit(1))
    whole = path.read_bytes()
    partial = b"".join(json.dumps(r).encode() + b"\n" for r in _unit(2)[:2])  # 2 of 3 lines, each whole
    path.write_bytes(whole + partial)
    assert [r["id"] for r in _store(path).read()] == [1, 1, 1]  # a plain reader skips it too
    with _store(path) as store:
        assert ("net", "224", 2, "dog") not in store.done
    assert path.read_bytes() == whole


def test_damage_in_the_middle_is_refused_not_silently_dropped(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    with _store(path) as store:
        store.append(_unit(1))
        store.append(_unit(2))
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = b"{garbage\n"
    path.write_bytes(b"".join(lines))
    with pytest.raises(XcnnError, match="line 2"):
        _store(path).open()


def test_append_refuses_a_unit_of_the_wrong_shape(tmp_path: Path) -> None:
    with _store(tmp_path / "r.jsonl") as store:
        with pytest.raises(ValueError):
            store.append(_unit(1)[:2])
        mixed = _unit(1)[:2] + _unit(2)[:1]
        with pytest.raises(ValueError):
            store.append(mixed)


def test_write_atomic_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "exp.json"
    write_atomic(target, b"old")
    write_atomic(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert [p.name for p in tmp_path.iterdir()] == ["exp.json"]
