"""The layers hold: no import cycles and no import from a lower layer into a higher one.

The graph is read from the source with ``ast``: every ``import`` and ``from ... import`` of our own
modules, at the top of a file, inside a function or under ``if TYPE_CHECKING`` alike (a cycle hidden
in a function is still a cycle; an annotation-only import still says which layer knows which).
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# Low to high: a module may import its own layer and the layers before it, never one after it.
# Top-level modules are layers of their own (shared by every package above them).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "ansi", "atomicfile"),
    ("states", "success"),
    ("timespec",),
    ("config",),
    ("schedule",),
    ("secrets",),
    ("blocks",),
    ("runtime",),
    ("history",),
    ("contract",),
    ("notify",),
    ("run",),
    ("team",),  # team mode's queue and workers: runs workflows through run/, above the history it writes
    ("server",),
    ("cli",),
    ("__main__",),
)

# Narrower rules inside the order: a lower layer may use a higher one's types but not these modules.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # runtime executes an action from a request; loading and checking the workspace is config's job
    "runtime": ("config.workspace", "config.schema", "config.scaffold"),
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports (resolved to modules that exist, not names in them)."""
    files = {module_name(p, root): p for p in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        here = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            # one list of candidate names per imported thing, most specific first
            wanted: list[list[str]] = []
            if isinstance(node, ast.Import):
                wanted = [[alias.name] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                wanted = [[f"{module}.{alias.name}", module] for alias in node.names]
            for candidates in wanted:
                for target in candidates:
                    # the longest existing module the name lies in
                    while target and target not in files:
                        target = target.rpartition(".")[0]
                    if target:
                        if target != name:
                            graph[name].add(target)
                        break
        graph.setdefault(name, set())
    return graph


def layer_of(module: str, package: str, layers: tuple[tuple[str, ...], ...]) -> int | None:
    rest = module[len(package) + 1 :] if module != package else ""
    head = rest.split(".")[0] if rest else ""
    for index, members in enumerate(layers):
        if head in members:
            return index
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
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
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations(
    graph: dict[str, set[str]],
    package: str,
    layers: tuple[tuple[str, ...], ...],
    forbidden: dict[str, tuple[str, ...]],
) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        mine = layer_of(module, package, layers)
        if mine is None and module != package:
            found.append(f"{module}: in no layer (add it to LAYERS)")
            continue
        for target in sorted(targets):
            theirs = layer_of(target, package, layers)
            if mine is not None and theirs is not None and theirs > mine:
                found.append(f"{module} imports {target} (a higher layer)")
            head = module[len(package) + 1 :].split(".")[0]
            for banned in forbidden.get(head, ()):
                if target == f"{package}.{banned}" or target.startswith(f"{package}.{banned}."):
                    found.append(f"{module} imports {target} (forbidden for {head}/)")
    return found


def test_our_source_has_no_import_cycle():
    graph = import_graph(SRC, "polycrate")
    assert len(graph) > 90  # the walk saw the source
    assert cycles(graph) == []


# Known and being removed (the server's launch options and wording move below cli/: issue #26's branch).
# A new entry here is a regression; the list only shrinks.
PENDING: set[str] = set()  # issue #26 removed the server's imports of polycrate.cli


def test_no_layer_imports_a_higher_one():
    graph = import_graph(SRC, "polycrate")
    found = violations(graph, "polycrate", LAYERS, FORBIDDEN)
    assert [v for v in found if v not in PENDING] == []
    assert PENDING <= set(found), "a pending violation is gone: remove it from PENDING"


# The checks themselves, on a synthetic tree: they must fail where they should.


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


SYNTHETIC_LAYERS = (("base",), ("low",), ("high",))


def test_a_cycle_inside_a_function_is_found(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/a.py": "from pkg.low import b\n",
        "low/b.py": "def f():\n    from pkg.low.a import thing\n",
    })
    assert cycles(import_graph(root, "pkg")) == [["pkg.low.a", "pkg.low.b"]]


def test_an_upward_import_is_found_also_under_type_checking_and_relative(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "",
        "base.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.high.x import X\n",
        "low/__init__.py": "",
        "low/a.py": "from ..high import x\n",
        "high/__init__.py": "",
        "high/x.py": "from pkg.low import a\nX = 1\n",
    })
    found = violations(import_graph(root, "pkg"), "pkg", SYNTHETIC_LAYERS, {})
    assert found == ["pkg.base imports pkg.high.x (a higher layer)", "pkg.low.a imports pkg.high.x (a higher layer)"]
    assert cycles(import_graph(root, "pkg")) == [["pkg.high.x", "pkg.low.a"]]


def test_a_forbidden_module_and_an_unplaced_package_are_found(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/load.py": "",
        "high/__init__.py": "",
        "high/y.py": "import pkg.low.load\n",
        "stray.py": "",
    })
    found = violations(import_graph(root, "pkg"), "pkg", SYNTHETIC_LAYERS, {"high": ("low.load",)})
    assert found == ["pkg.high.y imports pkg.low.load (forbidden for high/)", "pkg.stray: in no layer (add it to LAYERS)"]


@pytest.mark.parametrize("text", ["import pkg.high.x\n", "from pkg.high import x\n", "from pkg import high\n"])
def test_every_import_form_counts(tmp_path, text):
    root = _tree(tmp_path, {"__init__.py": "", "base.py": text, "high/__init__.py": "", "high/x.py": ""})
    assert violations(import_graph(root, "pkg"), "pkg", SYNTHETIC_LAYERS, {}) != []
