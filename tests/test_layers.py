"""Imports point down only, and no two modules import each other (directly or in a loop).

The layer order is read from the table in docs/architecture.md (the doc is the source of truth):
each row is ``| N | `module`, `package`, ... | ... |``. A module belongs to the most specific
entry that names it or one of its packages (``hardness.scoring`` before ``hardness``); the root
package's ``__init__`` is the entry ``__init__``. Every import is read with ``ast``: module level
and inside functions, absolute and relative. A module may import its own layer and the layers
below; an import of a higher layer, or any cycle between modules, fails the test.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "samplewise"
DOC = ROOT / "docs" / "architecture.md"
ROW = re.compile(r"^\|\s*(\d+)\s*\|([^|]*)\|")


def layer_table(text: str) -> dict[str, int]:
    """``{entry: layer}`` from the rows ``| N | `a`, `b.c` | ...`` of the doc's layer table."""
    table: dict[str, int] = {}
    for line in text.splitlines():
        m = ROW.match(line.strip())
        if m:
            for name in re.findall(r"`([\w.]+)`", m.group(2)):
                assert name not in table, f"{name} is in two layers of {DOC.name}"
                table[name] = int(m.group(1))
    return table


def modules(src: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """``{dotted module name: (file, is_package)}`` for every ``.py`` under ``src``."""
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def imports(mods: dict[str, tuple[Path, bool]]) -> dict[str, dict[str, int]]:
    """``{module: {imported samplewise module: line}}``, every import statement included."""
    def known(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, dict[str, int]] = {}
    for mod, (path, is_pkg) in mods.items():
        package = mod if is_pkg else mod.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [known(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    full = ".".join(base + ([node.module] if node.module else []))
                else:
                    full = node.module or ""
                # `from pkg import sub` imports the submodule; `from mod import name` the module
                targets = [f"{full}.{a.name}" if f"{full}.{a.name}" in mods else known(full)
                           for a in node.names]
            for t in targets:
                if t.split(".")[0] == "samplewise" and t != mod:
                    edges.setdefault(t, node.lineno)
        graph[mod] = edges
    return graph


def layer_of(mod: str, table: dict[str, int]) -> int | None:
    rel = mod.split(".", 1)[1] if "." in mod else "__init__"
    while rel:
        if rel in table:
            return table[rel]
        rel = rel.rpartition(".")[0]
    return None


def upward(graph, table) -> list[str]:
    bad = []
    for mod, edges in graph.items():
        for dep, line in edges.items():
            if layer_of(dep, table) > layer_of(mod, table):
                bad.append(f"{mod} (layer {layer_of(mod, table)}) imports {dep} "
                           f"(layer {layer_of(dep, table)}) at line {line}")
    return bad


def cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(loop_in(sorted(comp), graph))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def loop_in(comp: list[str], graph) -> list[str]:
    """One loop through the first module of a strongly connected component (breadth first)."""
    members, start = set(comp), comp[0]
    prev = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in graph[v]:
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return [*reversed(path), start]
            if w in members and w not in prev:
                prev[w] = v
                queue.append(w)
    return comp  # pragma: no cover - a component always holds a loop


def packages(graph) -> dict[str, dict[str, int]]:
    """The graph between top-level modules and packages (``samplewise.hardness`` stands for
    every module under it): a loop here is a loop between packages, such as
    runs -> coreset -> hardness (its scoring) -> runs."""
    def top(mod: str) -> str:
        return ".".join(mod.split(".")[:2])

    out: dict[str, dict[str, int]] = {}
    for mod, edges in graph.items():
        mine = out.setdefault(top(mod), {})
        for dep, line in edges.items():
            if top(dep) != top(mod):
                mine.setdefault(top(dep), line)
    return out


@pytest.fixture(scope="module")
def table():
    t = layer_table(DOC.read_text(encoding="utf-8"))
    assert len(set(t.values())) >= 5, f"no layer table found in {DOC}"
    return t


@pytest.fixture(scope="module")
def graph():
    return imports(modules())


def test_every_module_has_a_layer(graph, table):
    missing = sorted(m for m in graph if layer_of(m, table) is None)
    assert not missing, f"modules missing from the layer table of {DOC.name}: {missing}"


def test_imports_point_down_only(graph, table):
    bad = upward(graph, table)
    assert not bad, "imports from a lower layer into a higher one:\n" + "\n".join(bad)


def test_no_import_cycles(graph):
    loops = cycles(graph)
    assert not loops, "import cycles:\n" + "\n".join(" -> ".join(c) for c in loops)


def test_no_import_cycles_between_packages(graph):
    loops = cycles(packages(graph))
    assert not loops, "import cycles between packages:\n" + "\n".join(" -> ".join(c)
                                                                     for c in loops)


# --------------------------------------------------------------- the checks themselves can fail
def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "samplewise" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "samplewise"


def test_planted_upward_import_and_cycle_are_found(tmp_path):
    src = _write(tmp_path, {
        "__init__.py": "",
        "low.py": "def f():\n    from .pkg.high import g\n",           # function level, up
        "pkg/__init__.py": "",
        "pkg/high.py": "from samplewise import low\nfrom . import mid\n",
        "pkg/mid.py": "import samplewise.pkg.high\n",                   # mid <-> high
    })
    doc = "| 1 | `low` | |\n| 2 | `pkg`, `__init__` | |\n"
    t = layer_table(doc)
    g = imports(modules(src))
    assert g["samplewise.low"] == {"samplewise.pkg.high": 2}
    assert upward(g, t) == ["samplewise.low (layer 1) imports samplewise.pkg.high (layer 2) "
                            "at line 2"]
    # one component {low, high, mid}, reported as a loop through its first module
    assert cycles(g) == [["samplewise.low", "samplewise.pkg.high", "samplewise.low"]]
    del g["samplewise.low"]["samplewise.pkg.high"]
    assert cycles(g) == [["samplewise.pkg.high", "samplewise.pkg.mid", "samplewise.pkg.high"]]
    assert upward(g, t) == []
    # between packages, samplewise.pkg stands for high and mid: only low <-> pkg remains
    g["samplewise.low"]["samplewise.pkg.high"] = 2
    assert cycles(packages(g)) == [["samplewise.low", "samplewise.pkg", "samplewise.low"]]


def test_most_specific_entry_wins():
    t = layer_table("| 4 | `hardness` | |\n| 5 | `hardness.scoring` | |\n| 8 | `__init__` | |\n")
    assert layer_of("samplewise.hardness.trackers.aign", t) == 4
    assert layer_of("samplewise.hardness.scoring", t) == 5
    assert layer_of("samplewise", t) == 8
    assert layer_of("samplewise.other", t) is None
