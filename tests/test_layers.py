"""The layers of sml (docs/design.md, "Layers"): no import cycle between its modules, and no import
of a higher layer from a lower one. Every import counts, inside functions and under TYPE_CHECKING too.

Imports are read from the source (an AST walk, as the before-stop hook does): ``import a.b`` is an
import of module ``a.b`` (or of the package whose ``__init__`` holds the name); ``from a import b``
one of module ``a.b`` when there is one, else of ``a``. Package faces (``__init__``) are modules of
their package's layer.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"

#: The layer order, lowest first; docs/design.md lists the same. A module belongs to the layer of the
#: longest entry that is its name or a dotted prefix of it (``sml`` itself: the top package face only).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("sml", "sml.errors"),
    ("sml.utils", "sml.utils.run_layout", "sml.utils.run_folder", "sml.utils.tables"),
    ("sml.data",),
    ("sml.scores",),
    ("sml.stats",),
    ("sml.metrics",),
    ("sml.protocols",),
    ("sml.diagnostics",),
    ("sml.models.config",),
    ("sml.models.checkpoint", "sml.models.files", "sml.models.probe", "sml.models.erfnet", "sml.models.deeplab"),
    ("sml.models.contract",),
    ("sml.models.registry", "sml.models.zoo"),
    ("sml.models.hf",),
    ("sml.models.card",),
    ("sml.models",),
    ("sml.report",),
    ("sml.pipelines",),
    ("sml.train",),
    ("sml.demo",),
    ("sml.cli", "sml.__main__"),
)


def modules(src: Path = SRC) -> dict[str, Path]:
    """Every module of the package (package faces under the package's name)."""
    out = {}
    for f in (src / "sml").rglob("*.py"):
        out[".".join(f.relative_to(src).with_suffix("").parts).removesuffix(".__init__")] = f
    return out


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def imports(mods: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported module of sml: line of the first such import}."""
    graph: dict[str, dict[str, int]] = {}
    for m, f in mods.items():
        pkg = m if f.name == "__init__.py" else m.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [_resolve(a.name, mods) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else _resolve(base, mods)
                           for a in node.names]
            for t in targets:
                if t is not None and t.startswith("sml") and t != m:
                    edges.setdefault(t, node.lineno)
        graph[m] = edges
    return graph


def layer_of(module: str) -> int | None:
    """Index in :data:`LAYERS` of ``module``'s layer; None when no entry places it."""
    best, where = -1, None
    for i, entries in enumerate(LAYERS):
        for e in entries:
            if (module == e or (e != "sml" and module.startswith(e + "."))) and len(e) > best:
                best, where = len(e), i
    return where


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


MODS = modules()
GRAPH = imports(MODS)


def test_every_module_is_placed_and_every_entry_names_modules():
    assert not [m for m in MODS if layer_of(m) is None], "place these modules in LAYERS and docs/design.md"
    entries = [e for layer in LAYERS for e in layer]
    assert len(entries) == len(set(entries))
    assert not [e for e in entries if not any(m == e or m.startswith(e + ".") for m in MODS)]


def test_no_import_cycle_between_modules():
    found = cycles(GRAPH)
    assert not found, "import cycles (docs/design.md, 'Layers'): " + "; ".join(" <-> ".join(c) for c in found)


def upward(graph: dict[str, dict[str, int]]) -> list[tuple[str, int, str]]:
    """(module, line, imported module) for each import of a higher layer (unplaced modules are left out)."""
    return [(m, line, t) for m, edges in graph.items() for t, line in edges.items()
            if layer_of(m) is not None and layer_of(t) is not None and layer_of(t) > layer_of(m)]


def test_no_module_imports_a_higher_layer():
    bad = [f"{MODS[m].relative_to(REPO)}:{line}: {m} (layer {layer_of(m) + 1}) imports {t} (layer {layer_of(t) + 1})"
           for m, line, t in upward(GRAPH)]
    assert not bad, "imports against the layer order (docs/design.md, 'Layers'):\n" + "\n".join(bad)


def test_design_md_lists_the_same_layers():
    text = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    items = re.findall(r"^\d+\. (.*)$", section, flags=re.M)
    listed = [tuple(re.findall(r"`(sml[\w.]*)`", item.split(" — ", 1)[0])) for item in items]
    assert listed == list(LAYERS)


# ------------------------------------------------------------------ the checks themselves
def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        p = tmp_path / "sml" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return modules(tmp_path)


def test_the_walk_sees_function_and_type_checking_imports_through_package_faces(tmp_path):
    mods = _tree(tmp_path, {
        "__init__.py": "",
        "a/__init__.py": "from sml.a.low import x\n",
        "a/low.py": "def f():\n    from sml.b import y\n",
        "a/sib.py": "from sml.a import low\nfrom . import low as again\n",
        "b/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sml.a.low\n",
    })
    graph = imports(mods)
    assert set(graph["sml.a.low"]) == {"sml.b"}
    assert set(graph["sml.a.sib"]) == {"sml.a.low"}   # a sibling, not the package face
    assert cycles(graph) == [["sml.a.low", "sml.b"]]


def test_an_import_of_a_higher_layer_is_found():
    graph = {"sml.report.rundir": {"sml.pipelines.writers": 7, "sml.utils.tables": 8},
             "sml.models.contract": {"sml.models.card": 3, "sml.models.probe": 4}}
    assert upward(graph) == [("sml.report.rundir", 7, "sml.pipelines.writers"),
                             ("sml.models.contract", 3, "sml.models.card")]


@pytest.mark.parametrize("module, layer", [("sml", 0), ("sml.errors", 0), ("sml.utils.tables", 1),
                                           ("sml.scores.functional", 3), ("sml.models.check", 14),
                                           ("sml.models.card", 13), ("sml.__main__", 19)])
def test_layer_of(module, layer):
    assert layer_of(module) == layer


def test_importing_the_data_sets_loads_neither_metrics_nor_scipy():
    import subprocess
    import sys

    code = ("import sml.data, sys; print(sorted(m for m in sys.modules "
            "if m == 'scipy' or m.split('.')[:2] in (['sml', 'metrics'], ['sml', 'protocols'])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
