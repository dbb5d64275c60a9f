"""The report and its command run where torch is not installed."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.report_fixture import make_run_dir

# An import hook makes every `import torch` fail as on a machine without torch (a None in
# sys.modules would not do: scipy looks torch up there); the script then runs the report
# command and lists what it imported.
SCRIPT = """
import importlib.abc
import sys

import pytest


class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoTorch())
from xcnn.cli.report import main
rc = main([sys.argv[1]])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "captum"))
engine = sorted(m for m in ("xcnn.engine", "xcnn.rules", "xcnn.models") if m in sys.modules)
print("IMPORTED", heavy, engine)
sys.exit(rc)
"""


@pytest.mark.slow
def test_report_command_without_torch(tmp_path):
    run_dir = tmp_path / "run"
    make_run_dir(run_dir, images=((1, "dog"),), cnns=("resnet18",), sizes=("224",),
                 methods=("gradient", "gradcam"), baselines=("uniform",))
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(run_dir)], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "IMPORTED [] []" in result.stdout
    index = run_dir / "report" / "index.html"
    assert result.stdout.splitlines()[0] == str(index)
    assert "Gradient" in index.read_text()
