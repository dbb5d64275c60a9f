"""The experiment's modules import each other without a circle (runner -> backends -> progress,
never back), so each one reads on its own and none needs a lazy import to break a loop."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "xcnn" / "experiment"


def _module(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parents[1]).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``: they never run."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def imports(path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``path`` imports when it runs, at its top or in a function."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:  # "from pkg import module" needs the module, else pkg's names
                found.add(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module)
    return found & known


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    files = {_module(p, package): p for p in package.rglob("*.py")}
    return {name: imports(path, set(files)) - {name} for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every circle found by a depth-first walk, each as the path that closes it."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the walk's path, 2: finished

    def walk(path: list[str]) -> None:
        node = path[-1]
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                walk([*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk([node])
    return found


def test_the_cycle_finder_sees_a_circle_through_a_function_level_import(tmp_path: Path) -> None:
    pkg = tmp_path / "xcnn" / "experiment"
    (pkg / "backends").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "backends" / "__init__.py").write_text("")
    (pkg / "runner.py").write_text("def run():\n    from xcnn.experiment.backends import local\n")
    (pkg / "backends" / "local.py").write_text("from xcnn.experiment.runner import Progress\n")
    (pkg / "progress.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                     "    from xcnn.experiment.runner import Summary\n")
    edges = graph(pkg)
    assert edges["xcnn.experiment.progress"] == set()  # a type-only import runs nothing
    assert cycles(edges) == [["xcnn.experiment.backends.local", "xcnn.experiment.runner",
                              "xcnn.experiment.backends.local"]]


def test_the_experiment_has_no_import_circle() -> None:
    edges = graph()
    assert "xcnn.experiment.progress" in edges["xcnn.experiment.backends.local"]
    assert cycles(edges) == []
