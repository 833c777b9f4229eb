"""The emulator's modules build on each other in one direction: no module imports one that imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import airflow_provider_canvas.testing as testing_package

PACKAGE = "airflow_provider_canvas.testing"


def _imports() -> dict[str, set[str]]:
    """Module name -> the emulator modules it imports, type-only imports included."""
    graph: dict[str, set[str]] = {}
    for path in Path(testing_package.__file__).parent.glob("*.py"):
        name = path.stem
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE + "."):
                found.add(node.module.removeprefix(PACKAGE + ".").split(".")[0])
        graph[name] = found - {name}
    return graph


def test_the_primitives_are_the_ground_floor():
    assert _imports()["primitives"] == set()


def test_no_import_cycle_among_the_emulator_modules():
    graph = _imports()
    graph.pop("__init__")  # the package's own re-exports
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for imported in graph.get(name, ()):
            visit(imported, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())
