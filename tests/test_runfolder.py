"""The run folder's contract (xcnn.runfolder) sits below both its writer (xcnn.experiment) and
its reader (xcnn.report): the report never imports the experiment, and the contract imports
neither the experiment nor torch, so the report runs where only the records are."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "xcnn"


def imported(path: Path) -> set[str]:
    """Every module ``path`` names in an import, at its top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def offenders(package: Path, banned: tuple[str, ...]) -> list[str]:
    """'file: module' for each import under ``package`` of a banned module or one inside it."""
    out = []
    for path in sorted(package.rglob("*.py")):
        for name in sorted(imported(path)):
            if any(name == b or name.startswith(b + ".") for b in banned):
                out.append(f"{path.relative_to(package)}: {name}")
    return out


def test_the_scan_sees_imports_at_the_top_and_inside_functions(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n    from xcnn.experiment.store import JsonlStore\n")
    (tmp_path / "n.py").write_text("from xcnn import experiment\nimport xcnn.runfolder\nimport xcnn.experimental\n")
    assert offenders(tmp_path, ("xcnn.experiment",)) == [
        "m.py: xcnn.experiment.store", "m.py: xcnn.experiment.store.JsonlStore", "n.py: xcnn.experiment"]


def test_the_report_does_not_import_the_experiment():
    assert offenders(SRC / "report", ("xcnn.experiment",)) == []


def test_the_run_folder_contract_imports_neither_the_experiment_nor_torch():
    banned = ("xcnn.experiment", "xcnn.report", "torch", "torchvision", "xcnn.engine", "xcnn.registry")
    assert offenders(SRC / "runfolder", banned) == []


def test_reading_a_run_folder_loads_no_torch():
    code = ("import sys; import xcnn.runfolder.reading, xcnn.runfolder.lock, xcnn.runfolder.jsonl; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith('xcnn.experiment')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
