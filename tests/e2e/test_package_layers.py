"""The package's imports run one way, stage by stage, with no cycle.

Every import that runs (at module level or inside a function; not under
``if TYPE_CHECKING:``) between fxrazor's stages must go from a higher stage to a lower one:

    verify → face (cli, hf, summary, layer_groups, api, value_binding, supernet, __init__)
    → passes → layers
    → structures / mutators → mutables → ops / rules → analysis → trace → decompose
    → utils → errors

(mutables sit above ops because a method unit puts in its own dynamic ops: DCFF's fusing
conv, DMCP's BatchNorm, the slimmable unit's switchable BatchNorm.)

A module may import its own package's modules (without a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[2]

# Higher imports lower; equal ranks may not import each other across packages.
RANKS = {
    "errors": 0, "utils": 1, "decompose": 2, "trace": 3, "analysis": 4,
    "ops": 5, "rules": 5, "mutables": 6, "structures": 7, "layers": 8, "passes": 9,
    "mutators": 7,  # search groups over the mutables; the supernet holds the mutators
    "supernet": 10, "api": 11, "value_binding": 11, "summary": 12, "__init__": 13,
    "cli": 16,  # the command line: prunes (pruning, search), exports, checks (verify)
    "__main__": 17,  # ``python -m fxrazor``: the command line's entry
    "layer_groups": 12,  # ties units over value_binding's mutables
    "hf": 13,  # writes Hugging Face directories: freezes (api) and names layer groups
    "importance": 12,  # scores units' channels from a supernet's weights
    "importance_data": 11,  # calibration batches and activation hooks for importance
    "pruning": 14,  # prunes to a target through importance and the face's estimate
    "search": 14,  # searches a supernet's choices; uses the face (estimate)
    "algorithms": 15,  # train supernets: convert, freeze, search and distill below them
    "distill": 12,  # knowledge distillation losses and fine-tuning over plain modules
    "distill_features": 11,  # forward hooks on named modules, connectors, feature losses
    "flop_probe": 10, "estimate_plan": 11, "estimate": 12,  # analytic FLOPs/params over the supernet's graph
    "resource_estimator": 14,  # MMRazor's face over estimate and the latency table
    "latency_timing": 10,  # times a module in torch eager or ONNX Runtime
    "latency": 13,  # a per-layer latency table: times layers (timing), freezes (api), counts (estimate)
    "export_writers": 10,  # writes a plain module as .pt2 / ONNX / TorchScript, atomically
    "export": 12,  # fxrazor.save: freezes (api), writes (export_writers), rebuilds (structures)
    "drawing_layout": 10,  # lays a DAG out top to bottom (pure Python, imports nothing)
    "drawing_render": 11,  # SVG / HTML text of a laid-out picture
    "drawing": 12,  # fxrazor.draw: a supernet's graph, units and pins as HTML / SVG
    "verify": 14, "zoo": 15,  # ``python -m fxrazor.zoo``: the entry of verify's zoo runner
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "fxrazor").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts)] = path
    for path in sorted((ROOT / "passes").rglob("*.py")):
        parts = ("fxrazor", "passes", *path.relative_to(ROOT / "passes").with_suffix("").parts)
        found[".".join(parts)] = path
    return {name.removesuffix(".__init__") if name != "fxrazor.__init__" else name: path
            for name, path in found.items()}


def _runtime_imports(tree: ast.AST) -> list[str]:
    """Imported fxrazor module names, skipping ``if TYPE_CHECKING:`` blocks."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.extend(f"{node.module}.{a.name}" for a in node.names)
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return [n for n in names if n == "fxrazor" or n.startswith("fxrazor.")]


def _graph() -> nx.DiGraph:
    modules = _modules()
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        for target in _runtime_imports(ast.parse(path.read_text())):
            while target not in modules and "." in target:  # `from pkg import name`
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name:
                graph.add_edge(name, target)
    return graph


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_stage_has_a_rank() -> None:
    assert {_stage(m) for m in _modules()} <= set(RANKS)


def test_no_import_cycle() -> None:
    # `fxrazor` (the package __init__) re-exports the face; importing a submodule runs it
    # first, which is Python's package rule, not an edge
    graph = _graph()
    graph.remove_node("fxrazor.__init__") if "fxrazor.__init__" in graph else None
    cycles = list(nx.simple_cycles(graph))
    assert cycles == []


def test_imports_run_down_the_stages() -> None:
    wrong = []
    for source, target in _graph().edges:
        a, b = _stage(source), _stage(target)
        if a != b and RANKS[b] >= RANKS[a] and target != "fxrazor":
            wrong.append(f"{source} -> {target}")
    assert wrong == []


def test_type_checking_imports_are_not_edges() -> None:
    tree = ast.parse("from fxrazor.api import convert\nif TYPE_CHECKING:\n"
                     "    from fxrazor.supernet import Supernet\n")
    assert _runtime_imports(tree) == ["fxrazor.api.convert", "fxrazor.api"]


@pytest.mark.parametrize("root", ["fxrazor", "passes"])
def test_no_module_over_400_lines(root: str) -> None:
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / root).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}
