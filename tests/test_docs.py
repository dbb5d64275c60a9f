"""Every fenced Python block of README.md and docs/*.md runs as pasted, so the docs cannot drift.

A page's blocks run in order in one namespace and one fresh folder, as a reader pastes them one
after another. A page whose examples need the real offline weights or run experiments is marked
slow by a line ``<!-- test: slow -->`` anywhere on it.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[str]:
    return BLOCK.findall(text)


def _cases() -> list:
    cases = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        if python_blocks(text):
            marks = [pytest.mark.slow] if "<!-- test: slow -->" in text else []
            cases.append(pytest.param(page, id=page.relative_to(ROOT).as_posix(), marks=marks))
    return cases


def test_blocks_are_found() -> None:
    """The pattern finds the README's snippet (a test that ran no block would prove nothing)."""
    blocks = python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert blocks and "xcnn.Explainer" in blocks[0]
    assert python_blocks("text\n```python\nx = 1\n```\n```bash\nls\n```\n") == ["x = 1\n"]


@pytest.mark.parametrize("page", _cases())
def test_python_blocks_run(page: Path, tmp_path: Path) -> None:
    script = tmp_path / "blocks.py"
    script.write_text("\n".join(python_blocks(page.read_text(encoding="utf-8"))), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"{page.name}: a Python block failed:\n{done.stderr[-3000:]}"
