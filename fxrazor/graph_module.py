"""Build the GraphModule of a traced model.

``fx.GraphModule(root, graph)`` copies every layer and attribute the graph uses into a new
tree of bare container modules, walking the path of each from the top. When ``root`` is a
private copy that nothing else will use, and the graph uses all of it, its own tree can be
*adopted* instead: same layers, same parameters, nothing walked twice.

Example:
    >>> import torch
    >>> from torch import fx, nn
    >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    >>> gm = build_graph_module(model, fx.Tracer().trace(model), "Net", adopt=True)
    >>> gm.get_submodule("0") is model[0], gm(torch.ones(1, 2)).shape
    (True, torch.Size([1, 3]))
"""

from __future__ import annotations

from torch import fx, nn

__all__ = ["build_graph_module"]

try:  # generates its forward code only when first called: convert edits the graph first,
    # and a supernet that is only frozen never needs it
    from torch.fx._lazy_graph_module import _LazyGraphModule as _TracedGraphModule
except ImportError:  # pragma: no cover - older torch
    _TracedGraphModule = fx.GraphModule  # type: ignore[misc,assignment]  # eager fallback


def build_graph_module(root: nn.Module, graph: fx.Graph, class_name: str,
                       adopt: bool = False) -> fx.GraphModule:
    """The GraphModule of ``graph`` traced from ``root``.

    Args:
        root: the traced module.
        graph: its graph.
        class_name: the GraphModule's class name.
        adopt: ``root`` is a private copy: the GraphModule may take over its module tree
            when that tree holds nothing the graph leaves unused. ``root`` must not be
            used afterwards.
    """
    if not (adopt and _graph_uses_whole_tree(root, graph)):
        return _TracedGraphModule(root, graph, class_name)
    gm = _TracedGraphModule(nn.Module(), fx.Graph(tracer_cls=graph._tracer_cls), class_name)
    gm.training = root.training
    for registry in ("_modules", "_parameters", "_buffers", "_non_persistent_buffers_set"):
        gm.__dict__[registry] = root.__dict__[registry]
    gm.graph = graph
    return gm


def _graph_uses_whole_tree(root: nn.Module, graph: fx.Graph) -> bool:
    """Whether copying what ``graph`` uses out of ``root`` would copy all of ``root``: every
    submodule is called, or holds called submodules, and every parameter and buffer outside
    the called layers is read by the graph. Otherwise the copy would drop or change
    something (an unused head, a shared layer's second path, a tensor constant kept as a
    plain attribute, which the copy registers as a buffer), and adopting would keep it."""
    called: set[str] = set()
    read: set[str] = set()
    for node in graph.nodes:
        if node.op == "call_module":
            called.add(node.target)
        elif node.op == "get_attr":
            read.add(node.target)
    holders = {""}
    for target in called | read:
        path = target.rpartition(".")[0]
        while path not in holders:
            holders.add(path)
            path = path.rpartition(".")[0]
    kept = {}  # path -> module, for the modules outside the called layers
    stack = [("", root)]
    while stack:
        path, module = stack.pop()
        kept[path] = module
        prefix = f"{path}." if path else ""
        for name, value in (*module._parameters.items(), *module._buffers.items()):
            if value is not None and prefix + name not in read:
                return False
        for name, child in module._modules.items():
            child_path = prefix + name
            if child is None or child_path in called:
                continue
            if child_path not in holders:
                return False
            stack.append((child_path, child))
    for target in read:
        owner_path, _, name = target.rpartition(".")
        owner = kept.get(owner_path)
        if owner is None:
            if not _inside(owner_path, called):  # read through a non-module object
                return False
        elif name not in owner._parameters and name not in owner._buffers:
            return False
    return True


def _inside(path: str, called: set[str]) -> bool:
    """Whether ``path`` is a called layer or lies inside one."""
    while path:
        if path in called:
            return True
        path = path.rpartition(".")[0]
    return False
