"""The rule context: what a channel rule may ask about the graph and do to its elements.

Every channel rule (:mod:`fxrazor.rules`) is a plain function called with the
:class:`RuleContext` and the node: ``rule(ctx, node)`` for torch functions and tensor
methods, ``rule(ctx, node, module)`` for leaf modules. It returns the node's *channel info*
(a :class:`~fxrazor.analysis.elements.TensorInfo` per tensor output, a
:class:`~fxrazor.analysis.elements.SymSize` for a size, tuples of those, or None) and may,
through the context, join or pin elements (``ctx.space``), claim a layer's prunable
dimensions (``ctx.slot``), record size literals that must follow the pruned widths
(``ctx.resize_*``), or give up (``ctx.unknown``: pin everything the node touches).

Example: a rule for an op whose output has its input's channels, element for element
(``my_act`` stands for any such function):

    >>> def my_act_rule(ctx: RuleContext, node: fx.Node) -> ChannelInfo:
    ...     info = ctx.info(node.args[0])
    ...     if not isinstance(info, TensorInfo) or ctx.shape(node) != info.shape:
    ...         return ctx.unknown(node)  # not the plain case: pin, never guess
    ...     return info
    >>> # fxrazor.convert(model, x, function_rules={my_act: my_act_rule})
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from fxrazor.analysis.elements import ElementSpace, SymSize, TensorInfo
from fxrazor.analysis.result import Slot
from fxrazor.trace.shapes import NUMBER_KEY
from fxrazor.trace.tracer import TracedModel

__all__ = ["RuleContext", "ChannelInfo", "FunctionRule", "ModuleRule", "fn_name"]

# What a rule returns for a node: per tensor output its channel elements, a size's element
# ids, a tuple/list of those for several outputs, or None for a value without channels.
ChannelInfo: TypeAlias = Any
# ``rule(ctx, node)`` for call_function / call_method nodes.
FunctionRule: TypeAlias = Callable[["RuleContext", fx.Node], ChannelInfo]
# ``rule(ctx, node, module)``; the module is an instance of the rule's key type (which
# Callable cannot say, hence Any).
ModuleRule: TypeAlias = Callable[["RuleContext", fx.Node, Any], ChannelInfo]

_PUBLIC_NAMESPACES = (("torch", torch), ("torch.nn.functional", F), ("torch.fft", torch.fft),
                      ("torch.linalg", torch.linalg), ("torch.special", torch.special))


def fn_name(target: Any) -> str:
    """A readable name for a call target: its public path where it has one."""
    if isinstance(target, str):
        return target
    if isinstance(target, torch._ops.OpOverload):  # an ATen or custom op: "aten.gather.default"
        return str(target)
    name = getattr(target, "__name__", None)
    for prefix, namespace in _PUBLIC_NAMESPACES:
        if name and getattr(namespace, name, None) is target:
            return f"{prefix}.{name}"
    module = getattr(target, "__module__", None) or ""
    name = cast(str, getattr(target, "__qualname__", None)
                or getattr(target, "__name__", repr(target)))
    return f"{module}.{name}" if module else name


class RuleContext:
    """The state channel rules work on: element ids, per-node infos, slots, size literals.

    Rules read it through :meth:`info`, :meth:`shape` and :meth:`describe`; they act through
    ``space`` (``join``/``pin`` of element ids), :meth:`slot`, :meth:`unknown`,
    :meth:`pin_args` and the ``resize_*`` methods. ``split_dims`` says which dim stays
    prunable when a reshape splits a channel dim (``"largest"`` or ``"outer"``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from fxrazor.trace.tracer import trace_model
        >>> traced = trace_model(nn.Sequential(nn.Linear(4, 4)), torch.randn(2, 4))
        >>> ctx = RuleContext(traced)
        >>> node = list(traced.graph_module.graph.nodes)[1]
        >>> ctx.shape(node), ctx.describe(node)
        ((2, 4), "Linear '0'")
    """

    def __init__(self, traced: TracedModel, split_dims: str = "largest") -> None:
        self.gm = traced.graph_module
        # one path walk, shared with later passes (keys are node targets)
        self.modules: dict[Any, nn.Module] = traced.modules()
        self.opaque = traced.opaque
        self.space = ElementSpace()
        self.infos: dict[fx.Node, ChannelInfo] = {}
        self.slots: dict[tuple[str, str], tuple[Slot, np.ndarray]] = {}
        self.sites: list[tuple[str, str, tuple, list[np.ndarray]]] = []
        self.const_args: list[tuple[str, tuple[int | str, ...], int | float]] = []
        self.unknown_ops: list[str] = []
        self.unknown_nodes: set[str] = set()  # their fx node names
        # element ids that some op normalises over (statistics change when they are pruned)
        self.normalised: list[np.ndarray] = []
        # index tensors whose values are positions of a prunable dim (a router's top-k
        # experts): node -> the dim's element ids (a tuple of those for tuple outputs)
        self.indices: dict[fx.Node, Any] = {}
        # (element ids, k, why): at least k of these elements must be kept
        self.minimums: list[tuple[np.ndarray, int, str]] = []
        self.split_dims = split_dims

    # ---- queries used by rules ------------------------------------------------------------
    def info(self, arg: Any) -> ChannelInfo:
        """The channel info of a node argument (None for a constant)."""
        return self.infos.get(arg) if isinstance(arg, fx.Node) else None

    def shape(self, node: fx.Node) -> tuple[int, ...] | None:
        """The recorded output shape of a node with one tensor output."""
        meta = node.meta.get("tensor_meta")
        shape = getattr(meta, "shape", None)
        return tuple(int(s) for s in shape) if shape is not None else None

    def describe(self, node: fx.Node) -> str:
        """How a pin reason names the node: the layer type and path, or the op."""
        if node.op == "call_module":
            mod = self.modules[node.target]
            return f"{type(mod).__name__} '{node.target}'"
        return f"{fn_name(node.target)} (node '{node.name}')"

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

    def normalises(self, ids: np.ndarray) -> None:
        """Record that an op computes statistics over these elements: pruning them is
        allowed (the kept ones make the statistics) but zeroing them is not the same, so
        the zero-invariance oracle does not apply to their units."""
        self.normalised.append(ids)

    def unknown(self, node: fx.Node, reason: str | None = None) -> ChannelInfo:
        """Pin every prunable element of the node's inputs; the output is inert."""
        why = reason or f"{self.describe(node)} has no channel rule"
        if reason is None:
            self.unknown_ops.append(self.describe(node))
            self.unknown_nodes.add(node.name)
        self.pin_args(node, why)
        return self.inert_like(node.meta.get("tensor_meta"), why)

    def pin_args(self, node: fx.Node, why: str) -> None:
        """Pin every element of every tensor the node takes."""
        def visit(n: fx.Node) -> fx.Node:
            _pin_info(self.space, self.infos.get(n), why)
            return n

        fx.node.map_arg((node.args, node.kwargs), visit)

    def inert_like(self, meta: Any, why: str | None = None) -> ChannelInfo:
        """Channel info of the given shape(s) with no prunable dim; ``why``, when given,
        is the cause a layer meeting these dims names in its pin."""
        if meta is None:
            return None
        if hasattr(meta, "shape"):
            shape = tuple(int(s) for s in meta.shape)
            return TensorInfo(shape, why=dict.fromkeys(range(len(shape)), why) if why else {})
        if isinstance(meta, (tuple, list)):
            return tuple(self.inert_like(m, why) for m in meta)
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

    def freeze_numbers(self, node: fx.Node) -> None:
        """Numbers computed from prunable widths that ``node`` combines with tensors
        (``attn * (C // heads) ** -0.5``) become their traced values: the width they read
        may belong to another unit than the tensor's (the block's input, not the head
        dim), and a narrow one would change the values or break the arithmetic
        (``0 ** -0.5``). The full model's value keeps the full model's behaviour."""
        for i, value in enumerate(node.args):
            info = self.infos.get(value) if isinstance(value, fx.Node) else None
            if isinstance(info, SymSize) and info.prunable:
                number = cast(fx.Node, value).meta.get(NUMBER_KEY)
                if number is not None:  # (every node the shape run computed has one)
                    self.const_args.append((node.name, (i,), number))

    def resize_arg(self, node: fx.Node, path: tuple[int, ...], ids: np.ndarray) -> None:
        """Record a literal at ``node.args[path[0]][path[1]]...`` equal to the width of ids."""
        self.sites.append((node.name, "arg", (path,), [ids]))

    def resize_split(self, node: fx.Node, ids: np.ndarray, sizes: list[int], dim: int,
                     kind: str) -> None:
        """Record split sizes that must follow the widths of the parts of ``ids``."""
        bounds = np.cumsum([0, *sizes])
        parts = [ids[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self.sites.append((node.name, "split", (dim,), parts))

    def resize_slice(self, node: fx.Node, ids: np.ndarray, part: slice, locator: tuple) -> None:
        """Record slice bounds that must follow the kept width of ``ids[:bound]``."""
        where, parts = [], []
        for name, bound in (("start", part.start), ("stop", part.stop)):
            if bound is not None and 0 < bound < len(ids):
                where.append(name)
                parts.append(ids[:bound])
        if parts:
            self.sites.append((node.name, "slice", (locator[1], tuple(where)), parts))


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
