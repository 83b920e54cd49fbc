"""Insert dynamic ops: the pass that turns a traced model into a supernet graph.

Every layer with a prunable slot becomes its dynamic op; every parameter used directly in
the graph with a prunable dim becomes a :class:`~fxrazor.ops.DynamicParam` call; every size
literal that follows pruned channels (view sizes, split sizes, slice bounds) becomes a
:class:`~fxrazor.ops.SizeCounter` call. The result records, for each of these, which global
channel each position belongs to, so the supernet can push selections in one pass.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fxrazor.trace.tracer import trace_model
    >>> from fxrazor.passes.discover_units import discover_units
    >>> traced = trace_model(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)),
    ...                      torch.randn(1, 3, 4, 4))
    >>> dyn = insert_dynamic_ops(traced.graph_module, discover_units(traced))
    >>> [type(m).__name__ for m in dyn.graph_module.children()]
    ['DynamicConv2d', 'DynamicConv2d']
"""

from __future__ import annotations

import builtins
import operator
from collections import Counter
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from fxrazor.analysis.result import ChannelAnalysis, PositionMap, ResizeSite, Slot
from fxrazor.errors import UnsupportedModelError
from fxrazor.layers import LAYERS, LayerRecord, inplace_safe_types
from fxrazor.ops import Binding, DynamicParam, SizeCounter
from fxrazor.passes.inplace_adds import restore_inplace_adds
from fxrazor.trace.tracer import lookup_by_type

__all__ = ["insert_dynamic_ops", "DynamicGraph"]


@dataclass
class DynamicGraph:
    graph_module: fx.GraphModule
    bindings: list[Binding] = field(default_factory=list)
    counters: list[Binding] = field(default_factory=list)


def global_index(pmap: PositionMap, offsets: np.ndarray, total: int) -> torch.Tensor:
    """Positions → index into the concatenated unit masks (pinned → ``total``)."""
    return torch.from_numpy(_global_index_array(pmap, offsets, total))


def _global_index_array(pmap: PositionMap, offsets: np.ndarray, total: int) -> np.ndarray:
    gidx = np.where(pmap.unit >= 0, offsets[np.maximum(pmap.unit, 0)] + pmap.channel, total)
    return gidx.astype(np.int64, copy=False)


def _slot_indices(slot_maps: dict[Slot, PositionMap], offsets: np.ndarray, total: int
                  ) -> dict[Slot, torch.Tensor]:
    """``global_index`` of every slot with a prunable position, from one lookup over all
    slots (a model has hundreds, and each small lookup costs more than one large one)."""
    if not slot_maps or not len(offsets):  # no units: every position is pinned
        return {}
    maps = list(slot_maps.items())
    joined = PositionMap(np.concatenate([p.unit for _, p in maps]),
                         np.concatenate([p.channel for _, p in maps]))
    gidx = _global_index_array(joined, offsets, total)
    ends = np.cumsum([len(p) for _, p in maps])
    starts = np.r_[0, ends[:-1]]
    free_before = np.r_[0, np.cumsum(joined.unit >= 0)]
    free = (free_before[ends] - free_before[starts]).tolist()
    # each its own tensor, not a view of one buffer that every pickled binding would carry
    return {slot: torch.from_numpy(gidx[a:b].copy()) for (slot, _), a, b, n in
            zip(maps, starts.tolist(), ends.tolist(), free, strict=True) if n}


def insert_dynamic_ops(gm: fx.GraphModule, analysis: ChannelAnalysis,
                       layers: Mapping[type, LayerRecord] | None = None,
                       user_modules: AbstractSet[int] | None = None,
                       modules: dict[str, nn.Module] | None = None) -> DynamicGraph:
    """Turn ``gm`` into a supernet graph, in place (``gm`` must be a private copy).

    ``user_modules`` says that ``gm``'s layers are convert's own copies except the
    modules with these ids (the user's, shared by the copy): a copy that ``gm`` holds
    under one name only becomes a dynamic op in place instead of being wrapped in a new
    one. None (the default) wraps every layer: they may be held elsewhere.
    ``modules`` is ``dict(gm.named_modules(remove_duplicate=False))`` where the caller
    has it already (see ``TracedModel.modules``); it is not changed.
    ``layers``: the layer records (default :data:`fxrazor.layers.LAYERS`) that say which
    dynamic op each layer type becomes."""
    layers = LAYERS if layers is None else layers
    sizes = np.array([u.num_channels for u in analysis.units], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(sizes) else sizes
    total = int(sizes.sum())
    # ``gm`` is the private traced copy that convert owns: rewriting it in place saves a
    # second GraphModule (module copies and code generation) per conversion.
    new = gm
    result = DynamicGraph(new)
    params: dict[str, DynamicParam] = {}
    # one walk, not one per lookup; a copy, as layers are replaced in it below
    modules = dict(modules) if modules is not None else \
        dict(new.named_modules(remove_duplicate=False))
    adoptable = _adoptable(modules, user_modules)
    for slot, gidx in _slot_indices(analysis.slot_maps, offsets, total).items():
        if slot.is_param:
            module = params.get(slot.target) or _dynamic_param(new, slot.target, params)
        else:
            module = _dynamic_module(modules, slot.target, layers, adoptable)
        result.bindings.append(Binding(module, slot.role, gidx))
    for site in analysis.resize_sites:
        result.counters.extend(_rewrite_site(new, site, offsets, total))
    by_name = {n.name: n for n in new.graph.nodes}
    for name, path, value in analysis.const_args:
        _rewrite_arg(by_name[name], path, value)
    _drop_dead_numbers(new.graph)  # sites and constants leave size arithmetic unused
    restore_inplace_adds(new, inplace_safe_types(layers), recompile=False)
    # No graph.lint() here: it costs as much as the edits, and the tests lint every
    # supernet graph they build. The traced module is torch.fx's lazy GraphModule, so this
    # only marks its code stale: the code is generated on the supernet's first forward
    # (about 3 ms for 150 nodes), which convert -> freeze never needs.
    new.recompile()
    return result


def _adoptable(modules: dict[str, nn.Module], user_modules: AbstractSet[int] | None
               ) -> set[int]:
    """Ids of the layers that may become dynamic ops in place: not the user's, and held
    under one name (a layer also inside an opaque leaf, or under two names, must keep
    its static forward there)."""
    if user_modules is None:
        return set()
    names = Counter(id(m) for m in modules.values())
    return {key for key, count in names.items() if count == 1 and key not in user_modules}


def _dynamic_module(modules: dict[str, nn.Module], target: str,
                    layers: Mapping[type, LayerRecord], adoptable: set[int]) -> nn.Module:
    module = modules[target]
    if getattr(type(module), "set_selection", None) is not None:  # already dynamic
        return module
    record = lookup_by_type(layers, module)
    op_type = record.dynamic_op if record is not None else None
    if op_type is None:
        raise UnsupportedModelError(
            f"layer '{target}' ({type(module).__name__}) has prunable channels but no dynamic "
            f"op; pass dynamic_ops={{{type(module).__name__}: ...}} (or a layers= record "
            f"with one) to convert"
        )
    adopt = getattr(op_type, "adopt", None) if id(module) in adoptable else None
    if adopt is not None and adopt(module) is not None:
        return module  # the layer itself is now the dynamic op, where it was
    dynamic = op_type.from_static(module)
    if dynamic.training != module.training:  # a custom op may build a fresh module
        dynamic.train(module.training)
    parent, _, name = target.rpartition(".")
    setattr(modules[parent], name, dynamic)
    modules[target] = dynamic
    return dynamic


def _dynamic_param(gm: fx.GraphModule, target: str, cache: dict[str, DynamicParam]) -> nn.Module:
    owner_path, _, attr = target.rpartition(".")
    owner = gm.get_submodule(owner_path) if owner_path else gm
    value = getattr(owner, attr)
    dyn = DynamicParam(value, target).train(gm.training)
    name = "fxr_param_" + target.replace(".", "_")
    gm.add_submodule(name, dyn)
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and node.target == target:
            with gm.graph.inserting_before(node):
                call = gm.graph.call_module(name)
            call.meta = dict(node.meta)
            node.replace_all_uses_with(call)
            gm.graph.erase_node(node)
    cache[target] = dyn
    return dyn


def _counter(gm: fx.GraphModule, node: fx.Node, pmap: PositionMap, offsets: np.ndarray,
             total: int, tag: str) -> tuple[fx.Node, Binding]:
    counter = SizeCounter(len(pmap)).train(gm.training)
    name = f"fxr_size_{node.name}_{tag}"
    while hasattr(gm, name):  # a second size of the same call (``reshape(B, N, C)``)
        name += "_"
    gm.add_submodule(name, counter)
    with gm.graph.inserting_before(node):
        size_node = gm.graph.call_module(name)
    return size_node, Binding(counter, "size", global_index(pmap, offsets, total))


def _rewrite_site(gm: fx.GraphModule, site: ResizeSite, offsets: np.ndarray,
                  total: int) -> list[Binding]:
    node = next(n for n in gm.graph.nodes if n.name == site.node)
    made = [_counter(gm, node, p, offsets, total, str(i)) for i, p in enumerate(site.parts)]
    nodes = [m[0] for m in made]
    if site.kind == "arg":
        _rewrite_arg(node, site.where[0], nodes[0])
    elif site.kind == "split":
        _rewrite_split(node, site.where[0], nodes)
    else:
        _rewrite_slice(node, site.where, nodes)
    return [m[1] for m in made]


# Calls that only compute numbers from sizes (``C = x.shape[2]; C // heads``): pure, so one
# whose value no longer has a user can go.
_NUMBER_FUNCTIONS = frozenset({
    operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv,
    operator.mod, operator.pow, operator.neg, operator.getitem, builtins.getattr})
_NUMBER_METHODS = frozenset({"size", "dim", "numel"})


def _drop_dead_numbers(graph: fx.Graph) -> None:
    """Erase the size arithmetic that the constants above left without a user: it still
    reads the pruned widths, and some of it cannot run on narrow ones (``0 ** -0.5``)."""
    for node in reversed(graph.nodes):
        if node.users or "tensor_meta" in node.meta:
            continue
        if (node.op == "call_function" and node.target in _NUMBER_FUNCTIONS) or \
                (node.op == "call_method" and node.target in _NUMBER_METHODS):
            graph.erase_node(node)


def _replace_at(value: Any, path: tuple[int, ...], new: Any) -> Any:
    if not path:
        return new
    items = list(value)
    items[path[0]] = _replace_at(items[path[0]], path[1:], new)
    return type(value)(items) if isinstance(value, tuple) else items


def _rewrite_arg(node: fx.Node, path: tuple[int | str, ...],
                 new: fx.Node | int | float) -> None:
    first = path[0] if path else None
    if isinstance(first, str):  # a keyword argument (given or not)
        rest = tuple(int(i) for i in path[1:])
        node.kwargs = {**node.kwargs,
                       first: _replace_at(node.kwargs[first], rest, new) if rest else new}
    else:
        node.args = _replace_at(node.args, tuple(int(i) for i in path), new)


def _rewrite_split(node: fx.Node, dim: int, nodes: list[fx.Node]) -> None:
    """chunk/split with literal sizes → split with one size node per piece."""
    if node.op == "call_method":
        node.target = "split"
    else:
        node.target = torch.split
    node.args = (node.args[0], list(nodes), dim)
    node.kwargs = {}


def _rewrite_slice(node: fx.Node, where: tuple, nodes: list[fx.Node]) -> None:
    position, bounds = where
    index: Any = node.args[1]
    part = index[position] if position is not None else index
    values = {"start": part.start, "stop": part.stop}
    for bound, n in zip(bounds, nodes, strict=True):
        values[bound] = n
    new_part = slice(values["start"], values["stop"], part.step)
    if position is None:
        new_index: Any = new_part
    else:
        new_index = tuple(new_part if i == position else p for i, p in enumerate(index))
    node.args = (node.args[0], new_index)
