"""No import cycles among the modules of keras_iqa and data_pipeline (issue 23).

The graph is read from the source with `ast`: every `import` / `from ... import` statement, at module level and inside
functions (a function-level import still ties the two modules together). `from pkg import name` is an edge to the
submodule `pkg.name` when one exists, else to `pkg` itself. Imports under `if TYPE_CHECKING:` never run and are left out.
"""

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("keras_iqa", "data_pipeline")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree) -> set:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def _targets(node, module: str, is_package: bool, modules: set) -> list:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: strip `level` parts from the importing package
            pkg = module.split(".") if is_package else module.split(".")[:-1]
            pkg = pkg[:len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    out = []
    for name in names:
        while name and name not in modules:  # `import keras_iqa.x.y` where y is an attribute: its module
            name = name.rpartition(".")[0]
        if name:
            out.append(name)
    return out


def import_graph() -> nx.DiGraph:
    files = {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}
    modules = set(files)
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skip:
                for target in _targets(node, module, path.name == "__init__.py", modules):
                    if target != module:
                        graph.add_edge(module, target, line=f"{path.relative_to(ROOT)}:{node.lineno}")
    return graph


def _describe(graph, component) -> str:
    cycle = nx.find_cycle(graph.subgraph(component))
    return " -> ".join(f"{a} ({graph.edges[a, b]['line']})" for a, b in cycle) + f" -> {cycle[0][0]}"


def test_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert len(graph) > 50
    # function-level imports count: export.tflite imports export.parity inside _export_tflite
    assert graph.has_edge("keras_iqa.export.tflite", "keras_iqa.export.parity")
    assert graph.has_edge("keras_iqa.export.parity", "keras_iqa.export.tflite_scorer")


def test_export_conversion_and_parity_do_not_import_each_other():
    graph = import_graph()
    assert not nx.has_path(graph, "keras_iqa.export.parity", "keras_iqa.export.tflite")
    assert not nx.has_path(graph, "keras_iqa.export.tflite_scorer", "keras_iqa.export.tflite")


def test_no_import_cycles():
    # the only cycle when this test was written was export.parity <-> export.tflite (fixed by export.tflite_scorer)
    graph = import_graph()
    cycles = [c for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert not cycles, "import cycles:\n" + "\n".join(_describe(graph, c) for c in cycles)
