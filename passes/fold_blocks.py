"""Fold each choice block traced inline back into one call of the block.

Tracing puts every branch of a choice block into the flat graph (``fxrazor.trace.blocks``),
so that the analysis and ``insert_dynamic_ops`` see and rewrite their layers. This pass then
takes, for each block, each branch's nodes (the backward closure of its output up to its
input) into a small GraphModule over the same (now dynamic) layers and size counters, and
replaces the branches and their join in the top graph by one ``call_module`` of the block,
rebuilt with those graph modules as its candidates (``fxrazor.passes.nas_blocks``): the
block's own forward then runs one candidate, or mixes them, as before.

Layer paths do not change: the candidate graph modules hold their layers under the same
names as the candidates did (``<block>._candidates.<name>.<layer>``), so state_dict keys,
unit slots and the zero oracle's lookups in the original model all still agree.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> from fxrazor.mutables.mutable_module import OneShotMutableOP
    >>> op = OneShotMutableOP({"a": nn.Conv2d(4, 4, 1),
    ...                        "b": nn.Sequential(nn.Conv2d(4, 6, 1), nn.Conv2d(6, 4, 1))})
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 1), op, nn.Conv2d(4, 2, 1))
    >>> sn = fxrazor.convert(model, torch.randn(1, 3, 5, 5))
    >>> [n.target for n in sn.graph_module.graph.nodes if n.op == "call_module"]
    ['0', '1', '2']
    >>> [type(c).__name__ for c in sn.graph_module.get_submodule("1").candidates.values()]
    ['DynamicConv2d', 'GraphModule']
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn
from torch.fx.node import map_arg

from fxrazor.errors import UnsupportedModelError
from fxrazor.ops import DynamicParam
from fxrazor.passes.nas_blocks import candidate_dict, with_candidates
from fxrazor.trace.blocks import BLOCK_KEY, BRANCH_KEY, BlockCall, block_join

__all__ = ["fold_blocks"]

_OPAQUE = "pass its path in convert's leaf_modules to keep the block an opaque leaf"


def fold_blocks(gm: fx.GraphModule) -> list[str]:
    """Fold every traced block of ``gm`` in place; returns the blocks' paths."""
    joins = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is block_join]
    if not joins:
        return []
    tagged: dict[tuple[str, str], list[fx.Node]] = {}
    for node in gm.graph.nodes:
        tag = node.meta.get(BRANCH_KEY)
        if tag is not None:
            tagged.setdefault(tag, []).append(node)
    moved: set[str] = set()
    folded: dict[fx.Node, fx.Node] = {}  # a join already folded -> its block call
    for join in joins:
        folded[join] = _fold(gm, join, tagged, moved, folded)
    # the size counters and parameters now called inside a candidate only
    used = {n.target for n in gm.graph.nodes if n.op in ("call_module", "get_attr")}
    for name in sorted(moved - used):
        if "." not in name and hasattr(gm, name):
            delattr(gm, name)
    gm.recompile()
    return [join_call.path for join_call in (j.meta[BLOCK_KEY] for j in joins)]


def _fold(gm: fx.GraphModule, join: fx.Node, tagged: dict[tuple[str, str], list[fx.Node]],
          moved: set[str], folded: dict[fx.Node, fx.Node]) -> fx.Node:
    call: BlockCall = join.meta[BLOCK_KEY]
    graph = gm.graph
    inputs = [folded.get(n, n) for n in call.inputs]  # (a block may read another's output)
    for node in inputs:
        if node.graph is not graph or getattr(node, "_erased", False):
            raise UnsupportedModelError(
                f"block {call.path!r}: its input {node.name!r} was rewritten before folding; "
                f"{_OPAQUE}")
    old = candidate_dict(call.module)
    candidates: dict[str, nn.Module] = {}
    inner: set[fx.Node] = set()
    for name, out, source in zip(call.names, join.args, inputs, strict=True):
        nodes = tagged.get((call.path, name), [])
        candidates[name] = _candidate_module(gm, call, name, out, source, nodes, moved,
                                             old[name])
        inner.update(nodes)
    for node in inner:  # a value made inside a branch may only be used inside it
        if any(user not in inner and user is not join for user in node.users):
            raise UnsupportedModelError(
                f"block {call.path!r}: {node.name!r} is used outside the block; {_OPAQUE}")
    with graph.inserting_before(join):
        block = graph.call_module(call.path, map_arg(tuple(call.args), lambda n: folded.get(n, n)))
    block.meta = {k: v for k, v in join.meta.items() if k != BLOCK_KEY}
    join.replace_all_uses_with(block)
    graph.erase_node(join)
    for node in reversed(list(graph.nodes)):  # users before what they use
        if node in inner:
            graph.erase_node(node)
    for node in reversed(list(graph.nodes)):  # zero-input helpers left without users
        if node.target in moved and not node.users and node.op in ("call_module", "get_attr"):
            graph.erase_node(node)
    parent, _, attr = call.path.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, attr,
            with_candidates(call.module, candidates))
    return block


def _candidate_module(gm: fx.GraphModule, call: BlockCall, name: str, out: Any,
                      source: fx.Node, nodes: list[fx.Node], moved: set[str],
                      original: nn.Module) -> nn.Module:
    """The graph module of one branch: its input, its tagged nodes, and the input-free
    nodes it reads from outside (size counters, parameters), copied in."""
    prefix = f"{call.path}.{'_edges' if hasattr(call.module, '_edges') else '_candidates'}" \
             f".{name}."
    own = set(nodes)
    needed: set[fx.Node] = set()
    stack = [out] if isinstance(out, fx.Node) else []
    while stack:
        node = stack.pop()
        if node is source or node in needed:
            continue
        if node not in own:
            if node.all_input_nodes or node.op not in ("call_module", "get_attr"):
                raise UnsupportedModelError(
                    f"block {call.path!r}: candidate {name!r} reads {node.name!r} from "
                    f"outside the block; a candidate may read only the block's input; "
                    f"{_OPAQUE}")
        needed.add(node)
        stack.extend(node.all_input_nodes)
    if (len(needed) == 1 and out in needed and out.op == "call_module"
            and out.target == prefix[:-1] and out.args == (source,) and not out.kwargs):
        return _fetch(gm, prefix[:-1])  # a single-layer candidate is that (dynamic) layer
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {source: graph.placeholder("x")}
    root: dict[str, Any] = {}
    for node in gm.graph.nodes:  # graph order
        if node not in needed:
            continue
        copy = graph.node_copy(node, lambda n: env[n])
        copy.meta.pop(BRANCH_KEY, None)
        if node.op in ("call_module", "get_attr"):
            target = str(node.target)
            if target.startswith(prefix):
                copy.target = target[len(prefix):]
            else:
                moved.add(target)
            root[str(copy.target)] = _fetch(gm, target)
        env[node] = copy
    graph.output(env[out] if isinstance(out, fx.Node) else out)
    module = fx.GraphModule(root, graph)
    module.training = original.training  # its own mode; its layers keep theirs
    for value in root.values():  # a sliced parameter stays under its own name too, as
        # in a supernet without blocks (the candidate's state_dict keys do not change)
        if isinstance(value, DynamicParam) and value.target.startswith(prefix):
            _put(module, value.target[len(prefix):], _fetch(gm, value.target))
    return module


def _put(module: nn.Module, path: str, value: Any) -> None:
    """Set ``value`` (a parameter or a buffer) at ``path`` of ``module``, making bare
    containers on the way."""
    *owners, attr = path.split(".")
    for name in owners:
        if name not in module._modules:
            module.add_module(name, nn.Module())
        module = module._modules[name]  # type: ignore[assignment]
    if isinstance(value, nn.Parameter):
        module.register_parameter(attr, value)
    elif isinstance(value, torch.Tensor):
        module.register_buffer(attr, value)
    else:
        setattr(module, attr, value)


def _fetch(gm: fx.GraphModule, target: str) -> Any:
    owner, _, attr = target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, attr)
