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
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from fxrazor.analysis.elements import ElementSpace, SymSize, TensorInfo
from fxrazor.analysis.grouping import group_units
from fxrazor.analysis.result import ChannelAnalysis, PositionMap, ResizeSite, Slot
from fxrazor.errors import InvalidChoiceError
from fxrazor.rules.functions import FUNCTION_RULES, METHOD_RULES, NAMED_FUNCTION_RULES
from fxrazor.rules.layers import MODULE_RULES, lookup_by_type
from fxrazor.trace.tracer import TracedModel

__all__ = ["discover_units", "AnalysisContext"]

logger = logging.getLogger(__name__)


_PUBLIC_NAMESPACES = (("torch", torch), ("torch.nn.functional", F), ("torch.fft", torch.fft),
                      ("torch.linalg", torch.linalg), ("torch.special", torch.special))


def _fn_name(target: Any) -> str:
    """A readable name for a call target: its public path where it has one."""
    if isinstance(target, str):
        return target
    name = getattr(target, "__name__", None)
    for prefix, namespace in _PUBLIC_NAMESPACES:
        if name and getattr(namespace, name, None) is target:
            return f"{prefix}.{name}"
    module = getattr(target, "__module__", None) or ""
    name = cast(str, getattr(target, "__qualname__", None)
                or getattr(target, "__name__", repr(target)))
    return f"{module}.{name}" if module else name


class AnalysisContext:
    """The state rules work on: element ids, per-node infos, slots and size literals."""

    def __init__(self, traced: TracedModel, module_rules: dict, function_rules: dict,
                 method_rules: dict, split_dims: str = "largest") -> None:
        self.gm = traced.graph_module
        # one path walk, shared with later passes (keys are node targets)
        self.modules: dict[Any, nn.Module] = traced.modules()
        self.opaque = traced.opaque
        self.space = ElementSpace()
        self.infos: dict[fx.Node, Any] = {}
        self.slots: dict[tuple[str, str], tuple[Slot, np.ndarray]] = {}
        self.sites: list[tuple[str, str, tuple, list[np.ndarray]]] = []
        self.const_args: list[tuple[str, tuple[int, ...], int]] = []
        self.unknown_ops: list[str] = []
        self.module_rules = module_rules
        self.function_rules = function_rules
        self.method_rules = method_rules
        self.split_dims = split_dims

    # ---- queries used by rules ------------------------------------------------------------
    def info(self, arg: Any) -> Any:
        return self.infos.get(arg) if isinstance(arg, fx.Node) else None

    def shape(self, node: fx.Node) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta")
        shape = getattr(meta, "shape", None)
        return tuple(int(s) for s in shape) if shape is not None else None

    def describe(self, node: fx.Node) -> str:
        if node.op == "call_module":
            mod = self.modules[node.target]
            return f"{type(mod).__name__} '{node.target}'"
        return f"{_fn_name(node.target)} (node '{node.name}')"

    # ---- effects used by rules -------------------------------------------------------------
    def slot(self, target: str, role: str, size: int, constant: bool = False) -> np.ndarray:
        """Element ids of a layer dimension, allocated once per (target, role)."""
        key = (target, role)
        if key not in self.slots:
            ids = self.space.fresh(size)
            if size == 1:  # one channel cannot be pruned, and size-1 dims are never joined
                self.space.pin(ids, f"'{target}' has a single {role} channel")
            self.slots[key] = (Slot(target, role, size, constant), ids)
        return self.slots[key][1]

    def unknown(self, node: fx.Node, reason: str | None = None) -> Any:
        """Pin every prunable element of the node's inputs; the output is inert."""
        why = reason or f"{self.describe(node)} has no channel rule"
        if reason is None:
            self.unknown_ops.append(self.describe(node))
        self.pin_args(node, why)
        return self._inert_like(node.meta.get("tensor_meta"))

    def pin_args(self, node: fx.Node, why: str) -> None:
        def visit(n: fx.Node) -> fx.Node:
            _pin_info(self.space, self.infos.get(n), why)
            return n

        fx.node.map_arg((node.args, node.kwargs), visit)

    def _inert_like(self, meta: Any) -> Any:
        if meta is None:
            return None
        if hasattr(meta, "shape"):
            return TensorInfo(tuple(int(s) for s in meta.shape))
        if isinstance(meta, (tuple, list)):
            return tuple(self._inert_like(m) for m in meta)
        return None

    def resize_shape_args(self, node: fx.Node, out: TensorInfo) -> None:
        """Follow the sizes of view/reshape/expand/unflatten.

        At a prunable output dim the size (literal or computed) becomes the dim's kept
        count. At an inert dim, a size computed from a prunable width (``B, N, D = x.shape``
        ... ``y.reshape(B, N, D)`` with y's last dim not pruned like x's) is frozen to its
        traced value, since that dim keeps its width."""
        sizes, paths, lead = _size_args(node, out.ndim)
        ids: np.ndarray | None
        if sizes is None:
            for ids in out.all_ids():  # a whole shape object: no per-dim size to rewrite
                self.space.pin(ids, f"{self.describe(node)} takes a computed shape")
            return
        for i, (s, path) in enumerate(zip(sizes, paths, strict=True)):
            ids = out.axes.get(i + lead)
            if ids is not None and (isinstance(s, fx.Node) or (isinstance(s, int) and s != -1)):
                self.sites.append((node.name, "arg", (path,), [ids]))
            elif ids is None and isinstance(s, fx.Node):
                info = self.infos.get(s)
                if not isinstance(info, SymSize) or info.prunable:
                    self.const_args.append((node.name, path, out.shape[i + lead]))

    def resize_arg(self, node: fx.Node, path: tuple[int, ...], ids: np.ndarray) -> None:
        """Record a literal at ``node.args[path[0]][path[1]]...`` equal to the width of ids."""
        self.sites.append((node.name, "arg", (path,), [ids]))

    def resize_split(self, node: fx.Node, ids: np.ndarray, sizes: list[int], dim: int,
                     kind: str) -> None:
        bounds = np.cumsum([0, *sizes])
        parts = [ids[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self.sites.append((node.name, "split", (dim,), parts))

    def resize_slice(self, node: fx.Node, ids: np.ndarray, part: slice, locator: tuple) -> None:
        where, parts = [], []
        for name, bound in (("start", part.start), ("stop", part.stop)):
            if bound is not None and 0 < bound < len(ids):
                where.append(name)
                parts.append(ids[:bound])
        if parts:
            self.sites.append((node.name, "slice", (locator[1], tuple(where)), parts))

    # ---- the walk ----------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            self.infos[node] = self._single_channels(node, self._visit(node))

    def _single_channels(self, node: fx.Node, info: Any) -> Any:
        """Pin the element of every dim of size 1: removing it would leave nothing, and
        size-1 dims broadcast instead of joining. Later rules then see the dim as inert."""
        if isinstance(info, (tuple, list)):
            return type(info)(self._single_channels(node, i) for i in info)
        if not isinstance(info, TensorInfo) or all(info.shape[d] > 1 for d in info.axes):
            return info
        for d, ids in info.axes.items():
            if info.shape[d] <= 1:
                self.space.pin(ids, f"{self.describe(node)} leaves a single channel")
        return TensorInfo(info.shape, {d: a for d, a in info.axes.items() if info.shape[d] > 1})

    def _visit(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            return self._inert_like(node.meta.get("tensor_meta"))
        if node.op == "get_attr":
            return self._get_attr(node)
        if node.op == "output":
            self.pin_args(node, "model output")
            return None
        if node.op == "call_module":
            return self._call_module(node)
        rules = self.function_rules if node.op == "call_function" else self.method_rules
        rule = rules.get(node.target)
        if rule is None and node.op == "call_function":
            rule = NAMED_FUNCTION_RULES.get(_fn_name(node.target))
        return rule(self, node) if rule is not None else self.unknown(node)

    def _get_attr(self, node: fx.Node) -> Any:
        shape = self.shape(node)
        if shape is None:
            return None
        target = cast(str, node.target)  # a get_attr target is a qualified name
        owner, _, attr = target.rpartition(".")
        constant = not isinstance(getattr(self.modules[owner], attr, None), nn.Parameter)
        axes = {d: self.slot(target, f"dim{d}", s, constant)
                for d, s in enumerate(shape) if s > 1}
        return TensorInfo(shape, axes)

    def _call_module(self, node: fx.Node) -> Any:
        module = self.modules[node.target]
        if node.target in self.opaque:
            return self.unknown(node, f"opaque leaf '{node.target}': {self.opaque[node.target]}")
        rule = lookup_by_type(self.module_rules, module)
        return rule(self, node, module) if rule is not None else self.unknown(node)


def _pin_info(space: ElementSpace, info: Any, why: str) -> None:
    if isinstance(info, TensorInfo):
        for ids in info.all_ids():
            space.pin(ids, why)
    elif isinstance(info, (tuple, list)):
        for item in info:
            _pin_info(space, item, why)


def _size_args(node: fx.Node, ndim: int) -> tuple[Any, list[tuple[int, ...]], int]:
    """The sizes of a view/reshape/expand/unflatten call, the argument path of each, and
    the output dim the first one sizes; sizes None when they cannot be read one by one."""
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    if name == "unflatten":
        dim, sizes = node.args[1], node.args[2] if len(node.args) > 2 else None
        if not isinstance(sizes, (list, tuple)) or not isinstance(dim, int):
            return None, [], 0
        # ``dim`` counts in the input, which has len(sizes) - 1 fewer dims than the output
        return list(sizes), [(2, i) for i in range(len(sizes))], dim % (ndim - len(sizes) + 1)
    if name not in ("view", "reshape", "expand"):
        return [], [], 0
    rest = node.args[1:]
    paths: list[tuple[int, ...]]
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        sizes, paths = list(rest[0]), [(1, i) for i in range(len(rest[0]))]
    else:
        sizes, paths = list(rest), [(1 + i,) for i in range(len(rest))]
    if node.kwargs or len(sizes) > ndim or (name != "expand" and len(sizes) != ndim):
        return None, [], 0
    return sizes, paths, ndim - len(sizes)


_SPLIT_DIMS = ("largest", "outer")


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


def discover_units(traced: TracedModel, module_rules: dict[type, Any] | None = None,
                   function_rules: dict[Any, Any] | None = None,
                   method_rules: dict[str, Any] | None = None,
                   split_dims: str = "largest") -> ChannelAnalysis:
    """Find the channel units of a traced model.

    Args:
        traced: the output of :func:`fxrazor.trace.tracer.trace_model`.
        module_rules, function_rules, method_rules: extra rules merged over the defaults,
            e.g. ``{MyAct: fxrazor.rules.layers.elementwise_module}``.
        split_dims: when a reshape splits a prunable dim into several (attention heads ×
            head dim, channel groups), which one stays prunable: ``"largest"`` (head-dim
            pruning) or ``"outer"`` (whole heads / groups).

    Returns:
        The units, pinned groups (with reasons), slot position maps and size literals.
    """
    if split_dims not in _SPLIT_DIMS:
        raise InvalidChoiceError(f"split_dims must be one of {_SPLIT_DIMS}, got {split_dims!r}")
    ctx = AnalysisContext(
        traced,
        {**MODULE_RULES, **(module_rules or {})},
        {**FUNCTION_RULES, **(function_rules or {})},
        {**METHOD_RULES, **(method_rules or {})},
        split_dims,
    )
    ctx.run()
    units, pinned, comp_unit, comp_chan, labels = group_units(ctx.space, list(ctx.slots.values()))

    def position_map(ids: np.ndarray) -> PositionMap:
        comps = labels[ids]
        return PositionMap(comp_unit[comps], comp_chan[comps])

    slot_maps = _slot_position_maps(list(ctx.slots.values()), labels, comp_unit, comp_chan)
    sites = tuple(ResizeSite(name, kind, where, tuple(position_map(p) for p in parts))
                  for name, kind, where, parts in ctx.sites)
    sites = tuple(s for s in sites if not all(p.all_pinned for p in s.parts))
    return ChannelAnalysis(units, pinned, slot_maps, sites, dict(traced.opaque),
                           tuple(dict.fromkeys(ctx.unknown_ops)), tuple(ctx.const_args))

