"""The import structure of `autolabel` (docs/ARCHITECTURE.md, "Layers"): no cycle between its units, imports only
downwards through the layers, and no function-local import across units that is not on the allow-list below.

A *unit* is a subpackage (``autolabel/stages/``) or a top-level module (``autolabel/recipe.py``); the package's
own ``__init__`` (the version) is the unit ``autolabel``. Every module is parsed with `ast` (nothing is imported):
absolute and relative imports, at module level and inside functions.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "autolabel"

# Bottom to top. A unit may import units of its own layer or of lower layers (cycles inside a layer are
# caught by the cycle test); docs/ARCHITECTURE.md shows the same list.
LAYERS: list[tuple[str, ...]] = [
    ("autolabel", "errors", "config_io", "provenance", "checkpoint"),  # foundations: no domain knowledge
    ("data",),  # frames, the nuScenes layout, Occ3D files
    ("store",),  # Zarr frame arrays, the label store, confidence levels, export
    ("supervision",),  # 2D label providers, the supervision cache
    ("annotation", "network_input", "fusion"),  # manual labels, the network's input, evidence fusion
    ("synth", "dts"),  # the synthetic world; the DTS teacher and labelling
    ("training", "active"),  # training a round; active selection, manifest, ingest
    ("report",),  # the per-round HTML report
    ("recipe",),  # the recipe: section configs of the packages below, the run folder
    ("stages",),  # one function per step of the loop
    ("pipeline",),  # `autolabel run`: sequencing and resuming the stages
    ("commands",),  # one module per sub-command
    ("cli",),  # the entry point
]

# Function-local imports across units that are allowed: {(importing module, imported unit): why}. A local
# import may keep an optional or heavy dependency off the import path, but it must not hide an edge that the
# layers forbid or that closes a cycle. (Local imports inside one unit, such as supervision/providers.py
# loading SAM / CLIP modules lazily, are not checked.)
LOCAL_IMPORTS_ALLOWED: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    module: str  # importing module, e.g. autolabel.stages.steps
    target: str  # imported module, e.g. autolabel.store.export
    path: Path
    line: int
    local: bool  # inside a function


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str, package: Path) -> bool:
    """Whether a dotted name under the package is a module or subpackage (not a name defined in one)."""
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    base = package / rel
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports(package: Path = PACKAGE) -> list[Import]:
    out = []
    top = package.name
    for path in sorted(package.rglob("*.py")):
        mod = module_name(path, package)
        tree = ast.parse(path.read_text(), str(path))
        local = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                local |= {id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolved against the importing module's package
                    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                # `from autolabel import stages` / `from . import page` import modules; `from .x import f` imports x
                targets = [
                    f"{source}.{a.name}" if is_module(f"{source}.{a.name}", package) else source for a in node.names
                ]
            else:
                continue
            for t in dict.fromkeys(targets):  # `from .x import f, g` is one import of x
                if t == top or t.startswith(top + "."):
                    out.append(Import(mod, t, path, node.lineno, id(node) in local))
    return out


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def unit_graph(found: list[Import]) -> dict[str, dict[str, list[Import]]]:
    """unit -> imported unit -> the imports behind the edge."""
    graph: dict[str, dict[str, list[Import]]] = defaultdict(lambda: defaultdict(list))
    for imp in found:
        a, b = unit(imp.module), unit(imp.target)
        if a != b:
            graph[a][b].append(imp)
    return graph


def cycles(graph: dict[str, dict[str, list]]) -> list[list[str]]:
    """The strongly connected components with more than one unit (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
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
                out.append(sorted(comp))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def cycle_path(graph: dict[str, dict[str, list]], comp: list[str]) -> list[str]:
    """One loop through the component, as units: a -> b -> ... -> a (breadth-first from its first unit)."""
    start, members = comp[0], set(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in graph.get(v, {}):
                if w == start:
                    path = [start]
                    while v != start:
                        path.append(v)
                        v = prev[v]
                    return [start] + path[1:][::-1] + [start]
                if w in members and w not in prev and w != start:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp


def where(imp: Import) -> str:
    return f"{imp.path.relative_to(PACKAGE.parent)}:{imp.line} imports {imp.target}" + (
        " (inside a function)" if imp.local else ""
    )


def test_every_unit_has_a_layer():
    units = {unit(module_name(p, PACKAGE)) for p in PACKAGE.rglob("*.py")}
    layered = {u for layer in LAYERS for u in layer}
    assert not units - layered, f"units with no layer in tests/test_imports.py LAYERS: {sorted(units - layered)}"
    assert not layered - units, f"LAYERS names units that do not exist: {sorted(layered - units)}"


def test_no_import_cycle_between_units():
    graph = unit_graph(imports())
    problems = []
    for comp in cycles(graph):
        loop = cycle_path(graph, comp)
        edges = [graph[a][b][0] for a, b in zip(loop, loop[1:])]
        problems.append(
            f"cycle {' -> '.join(loop)} (strongly connected: {', '.join(comp)}):\n    "
            + "\n    ".join(where(e) for e in edges)
        )
    assert not problems, "import cycles between autolabel's units:\n  " + "\n  ".join(problems)


def test_units_import_only_downwards():
    layer_of = {u: i for i, layer in enumerate(LAYERS) for u in layer}
    graph = unit_graph(imports())
    upward = [
        f"{a} (layer {layer_of[a]}) -> {b} (layer {layer_of[b]}): {where(imps[0])}"
        for a, targets in sorted(graph.items())
        for b, imps in sorted(targets.items())
        if a in layer_of and b in layer_of and layer_of[b] > layer_of[a]
    ]
    assert not upward, "imports against the layers (docs/ARCHITECTURE.md):\n  " + "\n  ".join(upward)


def test_no_function_local_import_across_units():
    hidden = [
        where(imp)
        for imp in imports()
        if imp.local
        and unit(imp.module) != unit(imp.target)
        and (imp.module, unit(imp.target)) not in LOCAL_IMPORTS_ALLOWED
    ]
    assert not hidden, (
        "function-local imports across units (import at the top, or add them to LOCAL_IMPORTS_ALLOWED with the "
        "reason):\n  " + "\n  ".join(hidden)
    )


def test_the_checks_see_cycles_layers_and_local_imports(tmp_path):
    """On a small package with a cycle hidden behind a local import, the functions above find both."""
    pkg = tmp_path / "autolabel"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from ..b import f\n")
    (pkg / "b.py").write_text("def f():\n    from .a import x\n    from . import c\n")
    (pkg / "c.py").write_text("import autolabel.b\n")
    found = imports(pkg)
    graph = unit_graph(found)
    assert {a: sorted(bs) for a, bs in graph.items()} == {"a": ["b"], "b": ["a", "c"], "c": ["b"]}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycle_path(graph, ["a", "b", "c"]) == ["a", "b", "a"]
    assert sorted((i.module, i.target) for i in found if i.local) == [
        ("autolabel.b", "autolabel.a.x"),
        ("autolabel.b", "autolabel.c"),
    ]
