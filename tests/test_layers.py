"""The package's layers: no module imports a higher layer, and no modules import each other in a circle.

Every ``import`` and ``from ... import`` of a swaplab module counts, at the top of a file or inside a
function (a lazy import is still a dependency). The layers follow the data: media -> faces ->
facesets -> models -> training -> swap -> evaluation, with foundations below and the commands on
top; docs/architecture.md draws the same picture.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "swaplab"

#: Lowest first. A module may import its own layer and the layers below it.
LAYERS: list[set[str]] = [
    {"_version", "registry", "system", "progress"},
    {"io", "config"},
    {"data", "provenance"},
    {"identity"},
    {"faces"},
    {"facesets"},
    {"metrics"},
    {"models", "losses"},
    {"train"},
    {"swap", "sampling"},
    {"evaluate"},
    {"study"},
    {"ui"},  # the web app: the commands start it, nothing else imports it
    {"demo", "cli", "__init__", "__main__"},
]


def _unit(module: str) -> str:
    """The layer unit of a dotted module name: its top-level package or top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    raise AssertionError(f"swaplab/{unit} is in no layer: add it to LAYERS in tests/test_layers.py")


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> set[str]:
    """The swaplab modules a file imports (``from a.b import c`` is ``a.b.c`` when that is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("swaplab")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("swaplab") and not node.level:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    return {name for name in found if name in known}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, known) - {name} for name, path in modules.items()}


def test_every_module_sits_in_a_layer() -> None:
    for name in _modules():
        _layer(_unit(name) if name != "swaplab" else "__init__")


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for source, targets in _graph().items():
        source_layer = _layer(_unit(source) if source != "swaplab" else "__init__")
        for target in sorted(targets):
            if _layer(_unit(target)) > source_layer:
                upward.append(f"{source} -> {target}")
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "modules that import each other in a circle:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checks_can_fail() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _layer("faces") < _layer("train") < _layer("evaluate")
