"""The package's imports run one way: no circle, nothing up a layer, no product into another.

Read from the source with ``ast`` (nothing is imported), so an import only a type hint needs, or one
inside a function, counts as much as a top-level one: either makes the modules depend on each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import airflow_provider_canvas

PACKAGE = airflow_provider_canvas.__name__
ROOT = Path(airflow_provider_canvas.__file__).parent

#: Layer of each top-level part of the package: a module may import its own layer's ground floor
#: (layer 0) and anything lower than its own layer, never higher. The old 0.1 folders (hooks/,
#: operators/, ...) only hold docstrings: _moved.py serves their modules.
LAYERS = {
    "__init__": 0,
    "_moved": 0,
    "exceptions": 0,
    "get_provider_info": 0,
    "hooks": 0,
    "operators": 0,
    "loading": 0,
    "sensors": 0,
    "triggers": 0,
    "common": 1,
    "tokens": 2,
    "canvas": 3,
    "brightspace": 3,
    "canvas_data": 3,
    "cli": 4,
    "testing": 4,
    "ui_plugin": 4,
    "setup_check": 4,
}
#: Parts of one layer that must not import each other.
PRODUCTS = {"canvas", "brightspace", "canvas_data"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


MODULES = _modules()


def _resolve(name: str) -> str:
    """The longest prefix of ``name`` that is one of the package's modules."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str, path: Path) -> set[str]:
    """Every module of the package that ``module`` imports, anywhere in its file."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import mod`` imports the module pkg.mod when there is one.
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        found.update(_resolve(name) for name in names if name.split(".")[0] == PACKAGE)
    found.discard(module)
    # ``from package import module`` also names the package itself: its __init__ is no dependency
    # worth a layer check unless it is imported on its own.
    return {name for name in found if not any(other.startswith(name + ".") for other in found)}


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _part(module: str) -> str:
    rest = module.removeprefix(PACKAGE).lstrip(".")
    return rest.split(".")[0] if rest else "__init__"


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {_part(module) for module in MODULES}
    assert parts - LAYERS.keys() == set(), "give the new part a layer in LAYERS"
    assert len(GRAPH) > 100  # the whole package was read (127 modules when written)


def test_the_graph_sees_type_checking_and_function_level_imports() -> None:
    # tokens/model.py reads the provider's name for its messages; and a known TYPE_CHECKING import.
    assert f"{PACKAGE}.get_provider_info" in GRAPH[f"{PACKAGE}.tokens.model"]
    sources = "\n".join(path.read_text() for path in MODULES.values())
    assert "if TYPE_CHECKING:" in sources


def _cycles() -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    return components


def test_no_import_circle() -> None:
    assert _cycles() == []


def test_cycle_finder_finds_a_circle() -> None:
    global GRAPH
    saved = GRAPH
    GRAPH = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    try:
        assert _cycles() == [["a", "b", "c"]]
    finally:
        GRAPH = saved


def _violations() -> list[str]:
    found = []
    for module, targets in GRAPH.items():
        part = _part(module)
        for target in targets:
            other = _part(target)
            if other == part:
                continue
            if LAYERS[other] > LAYERS[part]:
                found.append(f"{module} imports {target}, a higher layer")
            elif LAYERS[other] == LAYERS[part] and (part in PRODUCTS or other in PRODUCTS):
                found.append(f"{module} imports {target}, another product")
            elif LAYERS[other] == LAYERS[part] and LAYERS[part] in (1, 2):
                found.append(f"{module} imports {target} of its own layer")
    return sorted(found)


def test_imports_run_down_the_layers_and_never_across_products() -> None:
    assert _violations() == []


@pytest.mark.parametrize(
    ("importer", "imported"),
    [("common.transport", "tokens.hook"), ("canvas_data.loading.load", "brightspace.loading.sql")],
)
def test_the_layer_check_catches_an_upward_and_a_cross_product_import(importer: str, imported: str) -> None:
    module = f"{PACKAGE}.{importer}"
    saved = GRAPH[module]
    GRAPH[module] = saved | {f"{PACKAGE}.{imported}"}
    try:
        assert _violations() != []
    finally:
        GRAPH[module] = saved
