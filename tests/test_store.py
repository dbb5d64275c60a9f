"""The crash-safe record store: torn tails, damage in the middle, the lock, the in-progress log."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from xcnn.errors import XcnnError
from xcnn.experiment.store import JsonlStore, RunLock, RunStore, started_counts
from xcnn.files import write_atomic
from xcnn.runfolder.records import UnitResult

from tests.test_records import _record

METHODS = ("a", "b", "c")
KEY = ("net", "224", "{}", "dog")


def _unit(image_id: int, p: float = 0.5, methods: tuple[str, ...] = METHODS) -> list[dict]:
    return [{"CNN": "net", "size": "224", "id": image_id, "class": "dog", "method": m, "P": p} for m in methods]


def _done(*ids: int, methods: tuple[str, ...] = METHODS) -> set[tuple[str, ...]]:
    return {("net", "224", str(i), "dog", m) for i in ids for m in methods}


def test_units_survive_reopen_and_nan_is_written_as_null(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    with JsonlStore(path) as store:
        store.append(_unit(1))
        store.append(_unit(2, p=math.nan))
    lines = path.read_text().splitlines()
    assert len(lines) == 6
    assert json.loads(lines[3])["P"] is None  # strict JSON: no bare NaN token
    assert "NaN" not in path.read_text()
    with JsonlStore(path) as again:
        assert again.done == _done(1, 2)
        assert [r["id"] for r in again.read()] == [1, 1, 1, 2, 2, 2]
        assert "_part" not in again.read()[0]


@pytest.mark.parametrize("cut", [1, 10, 40, 100])
def test_torn_last_write_is_cut_away_and_its_unit_not_done(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "records.jsonl"
    with JsonlStore(path) as store:
        store.append(_unit(1))
    whole = path.read_bytes()
    with JsonlStore(tmp_path / "other.jsonl") as other:
        other.append(_unit(2))
    torn = (tmp_path / "other.jsonl").read_bytes()
    path.write_bytes(whole + torn[:cut])  # the process died inside the write of unit 2
    assert [r["id"] for r in JsonlStore(path).read()] == [1, 1, 1]  # a reader leaves the torn write out
    with JsonlStore(path) as store:
        assert store.done == _done(1)
        assert path.read_bytes() == whole
        store.append(_unit(2))
    assert [r["id"] for r in JsonlStore(path).read()] == [1, 1, 1, 2, 2, 2]


def test_a_unit_may_gain_methods_in_a_later_write(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    with JsonlStore(path) as store:
        store.append(_unit(1, methods=("a",)))
        store.append(_unit(1, methods=("b", "c")))
    with JsonlStore(path) as store:
        assert store.done == _done(1)


@pytest.mark.parametrize("damage", ["garbage", "deleted"])
def test_damage_in_the_middle_is_refused_by_writer_and_reader(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "records.jsonl"
    with JsonlStore(path) as store:
        store.append(_unit(1))
        store.append(_unit(2))
    lines = path.read_bytes().splitlines(keepends=True)
    if damage == "garbage":
        lines[1] = b"{garbage\n"
    else:
        del lines[1]  # a record deleted by hand: its group no longer adds up
    path.write_bytes(b"".join(lines))
    with pytest.raises(XcnnError, match="line 2"):
        JsonlStore(path).open()
    with pytest.raises(XcnnError, match="line 2"):
        JsonlStore(path).read()


def test_append_refuses_a_group_of_two_units(tmp_path: Path) -> None:
    with JsonlStore(tmp_path / "r.jsonl") as store:
        with pytest.raises(ValueError):
            store.append(_unit(1)[:2] + _unit(2)[:1])


def test_write_atomic_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "exp.json"
    write_atomic(target, b"old")
    write_atomic(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert [p.name for p in tmp_path.iterdir()] == ["exp.json"]


def test_write_atomic_that_fails_leaves_no_temp(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "x.bin", "not bytes")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_second_lock_on_a_run_dir_is_refused_naming_the_holder(tmp_path: Path) -> None:
    code = ("import sys, time; from pathlib import Path; from xcnn.experiment.store import RunLock; "
            "l = RunLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(XcnnError, match=rf"in use by xcnn run \(pid {holder.pid} on "):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    RunLock(tmp_path).acquire().release()  # the kernel dropped the dead holder's lock


def test_started_log_counts_starts_since_the_last_end(tmp_path: Path) -> None:
    with RunStore(tmp_path) as store:
        a, b = ("net", "224", "1", "dog"), ("net", "224", "2", "dog")
        store.mark([a, b], "start")
        store.mark([a], "end")
        store.mark([a, b], "start")
    counts = started_counts(tmp_path / "started.jsonl")
    assert counts[a] == 1 and counts[b] == 2


def test_files_from_a_worker_stay_inside_the_run_dir(tmp_path: Path) -> None:
    with RunStore(tmp_path / "run") as store:
        store.open_failures()
        with pytest.raises(ValueError, match="outside the run folder"):
            store.add(UnitResult(("net", "224", "7", "dog"), [_record()], files={"../escape.jpg": b"x"}))
    assert not (tmp_path / "escape.jpg").exists()


def test_slug_keeps_names_apart_even_without_ascii_letters() -> None:
    from xcnn.files import slug

    assert slug("traffic_light") == "traffic_light" and slug("42") == "42"  # safe names stay as they are
    assert slug("traffic light").startswith("traffic_light-") and slug("  a/b..c ").startswith("a_b_c-")
    cat, dog = slug("猫"), slug("犬")
    assert cat != dog and cat.startswith("x-") and len(cat) == 10 and cat == slug("猫")  # stable per name
    assert slug("") != cat


def test_check_keys_are_typed_and_match_what_the_planner_asks() -> None:
    """A check row read back from checks.jsonl (0.2's, without a "check" field, or today's) is in
    the group the planner builds from the config (typed fields, not their text); other
    parameters are another group."""
    from xcnn.experiment.config import Checks, Config, DataConfig, ModelSpec
    from xcnn.experiment.plan import check_group
    from xcnn.experiment.store import check_key
    from xcnn.metrics.checks import RandomisationParams

    config = Config(DataConfig(("dog",)), (ModelSpec("m"),), checks=Checks(randomisation=True))
    row = json.loads(json.dumps({"CNN": "m", "size": "224", "id": 7, "class": "dog", "method": "gradcam",
                                 "test": "randomisation", "measure": "ssim", "step": 1, "steps": 5, "seed": 0}))
    planned = check_group(config, ("m", "224", "7", "dog"), "gradcam", "randomisation", RandomisationParams())
    assert check_key(row).group == planned and hash(check_key(row).group) == hash(planned)
    assert check_key({**row, "check": "randomisation"}).group == planned
    assert check_key({**row, "steps": 6}).group != planned and check_key({**row, "seed": 1}).group != planned
    assert check_key({**row, "params": "abc"}).group != planned
    assert check_key({**row, "step": None}).step is None and check_key({**row, "step": None}) != check_key(row)
