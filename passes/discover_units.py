"""Discover channel units: walk a shape-annotated graph with the channel rules, then group
connected channel elements into units.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fxrazor.trace.tracer import trace_model
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    >>> analysis = discover_units(trace_model(model, torch.randn(1, 3, 8, 8)))
    >>> [(u.name, u.num_channels) for u in analysis.units]
    [('0', 8)]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
from torch import fx, nn

from fxrazor.analysis.context import ChannelInfo, FunctionRule, RuleContext, fn_name
from fxrazor.analysis.elements import SymSize, TensorInfo
from fxrazor.analysis.grouping import group_units
from fxrazor.analysis.result import ChannelAnalysis, NodeDims, PositionMap, ResizeSite, Slot
from fxrazor.errors import InvalidChoiceError
from fxrazor.layers import LAYERS, LayerRecord
from fxrazor.rules.functional_layers import CONV_FUNCTIONS
from fxrazor.rules.functions import (
    FUNCTION_RULES,
    METHOD_RULES,
    NAMED_FUNCTION_RULES,
    pointwise,
)
from fxrazor.rules.routing import INDEX_CONSUMERS, INDEX_PASS
from fxrazor.trace.autograd_functions import ATTR_PREFIX, is_kept_function_call
from fxrazor.trace.blocks import block_join
from fxrazor.trace.tracer import TracedModel, lookup_by_type

__all__ = ["discover_units", "apply_rules", "SPLIT_DIMS"]

logger = logging.getLogger(__name__)


# Where the branches of a choice block traced inline meet (fxrazor.trace.blocks): any of
# them may give the block's output, so their channels join as in a residual add.
BLOCK_RULES: dict[Any, FunctionRule] = {block_join: pointwise}

class _Walk:
    """Visits every node once, in graph order, with the rule its op maps to."""

    def __init__(self, ctx: RuleContext, layers: Mapping[type, LayerRecord],
                 function_rules: dict[Any, FunctionRule],
                 method_rules: dict[str, FunctionRule]) -> None:
        self.ctx = ctx
        self.layers = layers
        self.function_rules = function_rules
        self.method_rules = method_rules

    def run(self) -> None:
        ctx = self.ctx
        self.kernel_weights = _kernel_weights(ctx.gm.graph)
        for node in ctx.gm.graph.nodes:
            ctx.infos[node] = self._single_channels(node, self._visit(node))
            if ctx.indices and any(a in ctx.indices for a in node.all_input_nodes):
                self._carry_indices(node)

    def _carry_indices(self, node: fx.Node) -> None:
        """Ids of positions (``fxrazor.rules.routing``) reach ``node``: an op that keeps
        its input's values carries them on; an op whose rule reads them has done so; any
        other use pins the positions, since it may compare the ids with constants."""
        ctx = self.ctx
        if node.op == "call_function" and node.target in INDEX_CONSUMERS:
            return
        key = node.target if node.op in ("call_function", "call_method") else None
        carry = INDEX_PASS.get(key) if key is not None else None
        first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        others = [a for a in node.all_input_nodes if a in ctx.indices and a is not first]
        if carry is not None and first is not None and first in ctx.indices and not others:
            out = carry(ctx, node, ctx.indices[first])
            if out is not None:
                ctx.indices[node] = out
                return
            if isinstance(ctx.indices[first], tuple):
                return  # an item without ids taken from a tuple (topk's values)
        for source in node.all_input_nodes:
            refs = ctx.indices.get(source)
            for ids in refs if isinstance(refs, tuple) else (refs,):
                if ids is not None:
                    ctx.space.pin(ids, f"{ctx.describe(node)} uses ids of these positions "
                                       f"that no rule carries")

    def _single_channels(self, node: fx.Node, info: ChannelInfo) -> ChannelInfo:
        """Pin the element of every dim of size 1: removing it would leave nothing, and
        size-1 dims broadcast instead of joining. Later rules then see the dim as inert."""
        if isinstance(info, (tuple, list)):
            return type(info)(self._single_channels(node, i) for i in info)
        if not isinstance(info, TensorInfo) or all(info.shape[d] > 1 for d in info.axes):
            return info
        for d, ids in info.axes.items():
            if info.shape[d] <= 1:
                self.ctx.space.pin(ids, f"{self.ctx.describe(node)} leaves a single channel")
        return TensorInfo(info.shape, {d: a for d, a in info.axes.items() if info.shape[d] > 1},
                          info.why)

    def _visit(self, node: fx.Node) -> ChannelInfo:
        ctx = self.ctx
        if node.op == "placeholder":
            return ctx.inert_like(node.meta.get("tensor_meta"), f"model input '{node.name}'")
        if node.op == "get_attr":
            return self._get_attr(node)
        if node.op == "output":
            ctx.pin_args(node, "model output")
            return None
        if node.op == "call_module":
            return self._call_module(node)
        if node.op == "call_function":
            rule = self.function_rules.get(node.target) \
                or NAMED_FUNCTION_RULES.get(fn_name(node.target))
        elif is_kept_function_call(node):  # a custom autograd Function, kept whole
            name = str(cast(fx.Node, node.args[0]).target)[len(ATTR_PREFIX):].rstrip("_")
            ctx.unknown_ops.append(f"autograd Function {name} (node '{node.name}')")
            ctx.unknown_nodes.add(node.name)
            return ctx.unknown(node, f"custom autograd Function {name} (node '{node.name}'; "
                                     f"kept as one call, so "
                                     f"its own backward runs; give it a rule to prune through)")
        else:  # call_method: the target is the method's name
            rule = self.method_rules.get(cast(str, node.target))
        return rule(ctx, node) if rule is not None else ctx.unknown(node)

    def _get_attr(self, node: fx.Node) -> ChannelInfo:
        ctx = self.ctx
        shape = ctx.shape(node)
        if shape is None:
            return None
        target = cast(str, node.target)  # a get_attr target is a qualified name
        owner, _, attr = target.rpartition(".")
        constant = not isinstance(getattr(ctx.modules[owner], attr, None), nn.Parameter)
        # the weight of a functional conv (standardised or not): its kernel dims are taps,
        # never channels, so a reshape that merges them with the input channels keeps those
        dims = 2 if target in self.kernel_weights else len(shape)
        axes = {d: ctx.slot(target, f"dim{d}", s, constant)
                for d, s in enumerate(shape[:dims]) if s > 1}
        return TensorInfo(shape, axes)

    def _call_module(self, node: fx.Node) -> ChannelInfo:
        ctx = self.ctx
        path = cast(str, node.target)  # a call_module target is a qualified name
        module = ctx.modules[path]
        if path in ctx.opaque:
            return ctx.unknown(node, f"opaque leaf '{path}': {ctx.opaque[path]}")
        record = lookup_by_type(self.layers, module)
        return record.rule(ctx, node, module) if record is not None else ctx.unknown(node)


SPLIT_DIMS = ("largest", "outer")

# How far back from a functional conv's weight argument to look for the parameter it is
# made of (weight standardisation is reshape -> batch_norm -> reshape_as: three steps).
_WEIGHT_DEPTH = 6


def _kernel_weights(graph: fx.Graph) -> set[str]:
    """Targets of the parameters that functional convs use as their weight, directly or
    through a chain of one-tensor ops on it (each step following the first argument)."""
    found: set[str] = set()
    for node in graph.nodes:
        if node.op != "call_function" or node.target not in CONV_FUNCTIONS:
            continue
        source = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
        for _ in range(_WEIGHT_DEPTH):
            if not isinstance(source, fx.Node):
                break
            if source.op == "get_attr":
                found.add(cast(str, source.target))
                break
            if source.op not in ("call_function", "call_method") or not source.args:
                break
            source = source.args[0]
    return found


def _slot_position_maps(slots: list[tuple[Slot, np.ndarray]], labels: np.ndarray,
                        comp_unit: np.ndarray, comp_chan: np.ndarray
                        ) -> dict[Slot, PositionMap]:
    """Every slot's position map, from one lookup over all slots' element ids (a model
    has hundreds of slots, and three small lookups each cost more than one large one)."""
    if not slots:
        return {}
    comps = labels[np.concatenate([ids for _, ids in slots])]
    units, channels = comp_unit[comps], comp_chan[comps]
    maps, start = {}, 0
    for slot, ids in slots:
        end = start + len(ids)
        maps[slot] = PositionMap(units[start:end], channels[start:end])
        start = end
    return maps


def apply_rules(traced: TracedModel, layers: Mapping[type, LayerRecord] | None = None,
                function_rules: dict[Any, FunctionRule] | None = None,
                method_rules: dict[str, FunctionRule] | None = None,
                split_dims: str = "largest") -> RuleContext:
    """Walk the graph once with the channel rules: the layers' from their records (default
    :data:`fxrazor.layers.LAYERS`), extra function and method rules merged over the
    defaults. The returned context holds the joins, pins, slots and size literals."""
    if split_dims not in SPLIT_DIMS:
        raise InvalidChoiceError(f"split_dims must be one of {SPLIT_DIMS}, got {split_dims!r}")
    ctx = RuleContext(traced, split_dims)
    _Walk(ctx, LAYERS if layers is None else layers,
          {**FUNCTION_RULES, **BLOCK_RULES, **(function_rules or {})},
          {**METHOD_RULES, **(method_rules or {})}).run()
    return ctx


def discover_units(traced: TracedModel, layers: Mapping[type, LayerRecord] | None = None,
                   function_rules: dict[Any, FunctionRule] | None = None,
                   method_rules: dict[str, FunctionRule] | None = None,
                   split_dims: str = "largest") -> ChannelAnalysis:
    """Find the channel units of a traced model.

    Args:
        traced: the output of :func:`fxrazor.trace.tracer.trace_model`.
        layers: the layer records (default :data:`fxrazor.layers.LAYERS`; see
            :func:`fxrazor.layers.layer_table` to add some).
        function_rules, method_rules: extra rules merged over the defaults, e.g.
            ``{torch.special.expit: fxrazor.rules.functions.pointwise}``.
        split_dims: when a reshape splits a prunable dim into several (attention heads ×
            head dim, channel groups), which one stays prunable: ``"largest"`` (head-dim
            pruning) or ``"outer"`` (whole heads / groups).

    Returns:
        The units, pinned groups (with reasons), slot position maps and size literals.
    """
    ctx = apply_rules(traced, layers, function_rules, method_rules, split_dims)
    units, pinned, comp_unit, comp_chan, labels = group_units(ctx.space, list(ctx.slots.values()))

    def position_map(ids: np.ndarray) -> PositionMap:
        comps = labels[ids]
        return PositionMap(comp_unit[comps], comp_chan[comps])

    slot_maps = _slot_position_maps(list(ctx.slots.values()), labels, comp_unit, comp_chan)
    sites = tuple(ResizeSite(name, kind, where, tuple(position_map(p) for p in parts))
                  for name, kind, where, parts in ctx.sites)
    fixed = [s for s in sites if all(p.all_pinned for p in s.parts)]
    sites = tuple(s for s in sites if not all(p.all_pinned for p in s.parts))
    normalised = tuple(p for p in (position_map(ids) for ids in ctx.normalised)
                       if not p.all_pinned)
    minimums = _unit_minimums([(position_map(ids), k, why) for ids, k, why in ctx.minimums])
    infos = ctx.infos
    return ChannelAnalysis(units, pinned, slot_maps, sites, dict(traced.opaque),
                           tuple(dict.fromkeys(ctx.unknown_ops)),
                           (*ctx.const_args, *_computed_fixed_sizes(ctx, fixed)),
                           normalised, minimums,
                           NodeDims(lambda: _node_dims(infos, position_map)),
                           frozenset(ctx.unknown_nodes))


def _node_dims(infos: Mapping[fx.Node, ChannelInfo],
               position_map: Any) -> dict[str, dict[int, PositionMap]]:
    """Per node with a tensor output, the position map of each dim with element ids (a
    dim whose positions are all pinned keeps its traced size, so it is left out)."""
    found: dict[str, dict[int, PositionMap]] = {}
    for node, info in infos.items():
        if not isinstance(info, TensorInfo):
            continue
        dims = {}
        for d, ids in info.axes.items():
            pmap = position_map(ids)
            if not pmap.all_pinned:
                dims[d] = pmap
        found[node.name] = dims
    return found


def _unit_minimums(needs: list[tuple[PositionMap, int, str]]
                   ) -> tuple[tuple[int, int, str], ...]:
    """(unit index, channels, why): the fewest channels each unit may keep so that at
    least k of the positions stay (a top-k along them). Positions spread over several
    units: each keeps enough to give k alone, or all it has, which is enough together."""
    found: dict[int, tuple[int, str]] = {}
    for pmap, k, why in needs:
        free = pmap.unit >= 0
        need = k - int((~free).sum())  # pinned positions always stay
        for unit in np.unique(pmap.unit[free]).tolist():
            mine = pmap.unit == unit
            per_channel = int(mine.sum()) // len(np.unique(pmap.channel[mine]))
            channels = -(-min(need, int(mine.sum())) // per_channel)  # ceil
            if channels > found.get(unit, (1, ""))[0]:
                found[unit] = (channels, why)
    return tuple((u, c, why) for u, (c, why) in sorted(found.items()))


def _computed_fixed_sizes(ctx: RuleContext, fixed: list[ResizeSite]
                          ) -> list[tuple[str, tuple[int, ...], int]]:
    """Sizes computed in the graph (``C // num_heads``) at dims that no unit prunes
    after all: each becomes its traced value. Read from other widths (``C`` of the block's
    input, which another unit prunes), it would no longer match the dim it sizes and the
    reshape would fail for most subnets; the dim itself keeps its full width."""
    nodes = {n.name: n for n in ctx.gm.graph.nodes} if fixed else {}
    found = []
    for site in fixed:
        if site.kind != "arg":
            continue
        path = site.where[0]
        value: Any = nodes[site.node].args
        for i in path:
            value = value[i]
        info = ctx.infos.get(value) if isinstance(value, fx.Node) else None
        if isinstance(value, fx.Node) and not (isinstance(info, SymSize) and not info.prunable):
            found.append((site.node, path, len(site.parts[0])))
    return found

