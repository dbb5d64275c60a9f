"""`xcnn app`'s command line, without a browser: what it refuses, and the warning for another host."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from xcnn.cli import main

pytestmark = pytest.mark.app


def test_a_missing_run_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("fastapi")
    assert main(["app", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and len(err.strip().splitlines()) == 1


def test_weights_need_exactly_one_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("fastapi")
    assert main(["app", "--weights", str(tmp_path / "w.pt")]) == 2
    assert "--weights goes with exactly one --model" in capsys.readouterr().err


@pytest.mark.slow  # builds the app: imports torch and the registry's modules
@pytest.mark.parametrize(("host", "warned"), [("127.0.0.1", False), ("0.0.0.0", True)])
def test_another_host_than_loopback_warns(host: str, warned: bool, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **_: served.update(host=host, port=port))
    with caplog.at_level(logging.WARNING, logger="xcnn.cli.app"):
        assert main(["app", "--host", host, "--port", "7999"]) == 0
    assert served == {"host": host, "port": 7999}
    assert any("no login" in r.getMessage() for r in caplog.records) == warned
