"""Faults of the run folder: a user's folder is never written, xcnn's own leftovers are resumed,
a run whose every unit failed says so, damaged records are refused."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from tests.report_fixture import make_run_dir
from tests.test_run import make_coco, write_config
from xcnn.cli import main
from xcnn.errors import XcnnError
from xcnn.experiment import load_config, run
from xcnn.experiment.store import JsonlStore

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture()
def cfg(tmp_path: Path) -> Path:
    """One photo per category, one small size, one method: a run of four units."""
    return write_config(tmp_path / "cfg.toml", *make_coco(tmp_path / "coco", per_category=1), per_category=1,
                        extra_run='methods = ["gradient"]')


def _small(cfg: Path, extra: str) -> Path:
    text = cfg.read_text().replace('sizes = ["original", 48]', extra)
    out = cfg.with_name("small.toml")
    out.write_text(text)
    return out


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def _one_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_users_folder_is_refused_and_nothing_in_it_is_touched(
        tmp_path: Path, cfg: Path, capsys: pytest.CaptureFixture) -> None:
    user = tmp_path / "U"
    for rel in ("report/important.txt", ".notes.tmpl", "sub/deeper/.draft.tmp_old", "records.csv", "exp.json",
                ".exp.json.tmp12"):
        (user / rel).parent.mkdir(parents=True, exist_ok=True)
        (user / rel).write_text("k\n")
    before = _tree(user)
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(user)]) == 2
    err = _one_line(capsys)
    assert str(user) in err and "not an xcnn run" in err
    assert _tree(user) == before  # not even a .lock


def test_a_users_config_json_does_not_make_a_run(tmp_path: Path, cfg: Path, capsys: pytest.CaptureFixture) -> None:
    user = tmp_path / "U"
    user.mkdir()
    (user / "config.json").write_text('{"lr": 0.1}')
    (user / ".draft.tmp1").write_text("k")
    before = _tree(user)
    assert main(["run", str(cfg), "--out", str(user), "--no-report"]) == 2
    assert "not an xcnn run" in _one_line(capsys)
    assert _tree(user) == before


def test_empty_out_is_refused_and_the_current_folder_untouched(
        tmp_path: Path, cfg: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    here = tmp_path / "proj"
    (here / "src").mkdir(parents=True)
    (here / "src" / ".cache.tmpfile").write_text("k")
    monkeypatch.chdir(here)
    before = _tree(here)
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", ""]) == 2
    assert "--out" in _one_line(capsys)
    assert _tree(here) == before


@pytest.mark.parametrize("below", ["", "sub"])
def test_out_naming_a_file_is_an_input_error(tmp_path: Path, cfg: Path, capsys: pytest.CaptureFixture,
                                             below: str) -> None:
    file = tmp_path / "results.txt"
    file.write_text("mine")
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(file / below if below else file), "--no-report"]) == 2
    err = _one_line(capsys)
    assert f"{file} is a file; --out takes a folder" in err and "free space" not in err
    assert file.read_text() == "mine"


def test_a_run_killed_before_its_config_resumes_and_only_xcnns_temporaries_go(
        tmp_path: Path, cfg: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    # what a run killed while it loaded its data leaves: the lock, an empty store, a half config
    (out / ".lock").write_text("xcnn run (pid 1 on elsewhere)\n")
    (out / "records.jsonl").write_bytes(b"")
    (out / "started.jsonl").write_bytes(b"")
    (out / ".config.json.tmp4242").write_text("{")
    assert run(load_config(cfg), out).records == 4
    assert not (out / ".config.json.tmp4242").exists()

    # a finished run: xcnn's own temporaries go when it reopens; the user's notes stay
    picture = next((out / "pictures").rglob("*.jpg"))
    ours = [out / ".exp.json.tmp77", picture.with_name(f".{picture.name}.tmp77")]
    theirs = [out / ".notes.tmpl", out / "sub" / ".draft.tmp_old", out / ".mine.tmp5", out / "notes.txt"]
    for path in ours + theirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("k")
    assert run(load_config(cfg), out).records == 0
    assert not any(p.exists() for p in ours)
    assert all(p.read_text() == "k" for p in theirs)


def test_a_run_whose_every_unit_fails_exits_3_naming_failures_jsonl(
        tmp_path: Path, cfg: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> None:
    # photos of 64×64 and 64×80 pass the selection; the 72×72 input size does not
    small = _small(cfg, "sizes = [72]\nmax_pixels = 5150")
    out = tmp_path / "run"
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        assert main(["run", str(small), "--out", str(out)]) == 3
    said = capsys.readouterr().err + caplog.text
    assert f"all 2 units failed for data reasons; see {out / 'failures.jsonl'}" in said
    assert "holds no records" not in said
    assert [json.loads(x)["reason"] for x in (out / "failures.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_foreign_report_folder_is_never_replaced(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from xcnn.report import write_report

    folder = tmp_path / "exported"  # records.csv alone: a report can be made of it
    make_run_dir(folder, csv=True, jsonl=False, pictures=False)
    (folder / "config.json").unlink()
    (folder / "report").mkdir()
    (folder / "report" / "important.txt").write_text("k")
    with pytest.raises(XcnnError, match="not an xcnn report"):
        write_report(folder, images=None)
    assert (folder / "report" / "important.txt").read_text() == "k"
    assert sorted(p.name for p in folder.iterdir()) == ["records.csv", "report"]

    # a report xcnn wrote is replaced, as before
    (folder / "report" / "important.txt").unlink()
    (folder / "report").rmdir()
    first = write_report(folder, images=None)
    assert first.is_file()
    assert write_report(folder, images=None) == first


def _records(path: Path, **fields: object) -> None:
    good = {"CNN": "net", "size": "224", "id": 0, "class": "dog", "method": "gradient", "P": 0.25, "E": 1.0,
            "E_celk": 4.0}
    rec = {k: v for k, v in {**good, "id": 1, **fields}.items() if v != "absent"}
    with JsonlStore(path) as store:
        store.append([good])  # a good record first: the one tested is on line 2
        store.append([rec])


@pytest.mark.parametrize("fields, problem", [
    ({"P": 1.5, "E": 6.0, "E_celk": 4.0}, "outside [0, 1]"),
    ({"P": -0.1, "E": None, "E_celk": None}, "outside [0, 1]"),
    ({"P": 0.9}, "E / E_celk"),
    ({"P": 0.3, "E_celk": 0.0}, "E / E_celk"),
    ({"P": "0.3"}, "not a number"),
])
def test_a_record_with_an_impossible_P_is_refused_as_damaged(tmp_path: Path, fields: dict, problem: str) -> None:
    path = tmp_path / "records.jsonl"
    _records(path, **fields)
    with pytest.raises(XcnnError) as err:
        JsonlStore(path).read()
    message = str(err.value)
    assert len(message.splitlines()) == 1 and f"{path}: line 2" in message and problem in message


@pytest.mark.parametrize("fields", [
    {"P": None, "E": 0.0, "E_celk": 0.0},  # an all-zero map
    {"P": None, "E": None, "E_celk": None},  # an overflowing map: inf stored as null
    {"P": 0.0, "E": 3.0, "E_celk": None},  # finite energy inside, infinite in total
    {"P": 1.0, "E": 4.0, "E_celk": 4.0},
    {"P": 0.3, "E": "absent", "E_celk": "absent"},  # no energies to compare with
])
def test_legitimate_records_are_read(tmp_path: Path, fields: dict) -> None:
    path = tmp_path / "records.jsonl"
    _records(path, **fields)
    assert len(JsonlStore(path).read()) == 2


def test_an_address_with_the_local_backend_warns(tmp_path: Path, cfg: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(_small(cfg, 'sizes = [48]\naddress = "10.0.0.1:6379"'))
    assert config.run.backend == "local" and config.run.address == "10.0.0.1:6379"
    # fails before any work
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, ann_file=str(tmp_path / "missing.json")))
    with caplog.at_level(logging.WARNING), pytest.raises(XcnnError, match="not found"):
        run(config, tmp_path / "run")
    assert any("run.address" in r.getMessage() and "local" in r.getMessage() for r in caplog.records)
