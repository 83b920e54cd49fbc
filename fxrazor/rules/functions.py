"""Channel rules for functions and tensor methods.

A rule receives the :class:`~fxrazor.analysis.context.RuleContext` and a node and returns
the node's channel info (:class:`~fxrazor.analysis.elements.TensorInfo`, a tuple of them, or
None for non-tensors). Rules are looked up in explicit dicts keyed by the function object or the method name; anything not
in them is *unknown*: the context pins every prunable element of its inputs.

Example:
    >>> import operator
    >>> FUNCTION_RULES[operator.add] is pointwise
    True
"""

from __future__ import annotations

import builtins
import operator
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx

from fxrazor.analysis.context import FunctionRule, RuleContext
from fxrazor.analysis.elements import (
    SymSize,
    TensorInfo,
    broadcast_join,
    permute_info,
    reshape_info,
)
from fxrazor.rules.args import arg
from fxrazor.rules.contraction import CONTRACTION_RULES, grouped_mm
from fxrazor.rules.functional_layers import FUNCTIONAL_LAYER_RULES
from fxrazor.rules.routing import ROUTING_METHOD_RULES, ROUTING_RULES
from fxrazor.rules.slicing import cat, chunk, getitem, narrow, split, stack, unbind
from fxrazor.rules.statistics import is_norm_statistic
from fxrazor.trace import signature as _signature

__all__ = ["FUNCTION_RULES", "METHOD_RULES", "NAMED_FUNCTION_RULES", "Rule", "pointwise", "arg",
           "along_dim", "spatial"]

Rule = FunctionRule


def _tensor_infos(ctx: RuleContext, node: fx.Node) -> list[TensorInfo]:
    found: list[TensorInfo] = []
    # ``append(...) or n`` collects each info and keeps the args as they are
    fx.node.map_arg((node.args, node.kwargs),
                    lambda n: found.append(ctx.info(n)) or n)  # type: ignore[func-returns-value]
    return [i for i in found if isinstance(i, TensorInfo)]


def _sym_args(ctx: RuleContext, node: fx.Node) -> SymSize:
    found: list[Any] = []
    # ``append(...) or n`` collects each info and keeps the args as they are
    fx.node.map_arg((node.args, node.kwargs),
                    lambda n: found.append(ctx.info(n)) or n)  # type: ignore[func-returns-value]
    return SymSize(any(isinstance(i, SymSize) and i.prunable for i in found)
                   or any(isinstance(i, (list, tuple)) and any(
                       isinstance(j, SymSize) and j.prunable for j in i) for i in found))


def pointwise(ctx: RuleContext, node: fx.Node) -> TensorInfo | SymSize | None:
    """Element-wise op with broadcasting over all tensor arguments (on ints: arithmetic on
    sizes, which stays prunable if any operand is)."""
    shape = ctx.shape(node)
    if shape is None:
        return _sym_args(ctx, node)
    ctx.freeze_numbers(node)  # a size read from a pruned width, used as a value
    return broadcast_join(ctx.space, _tensor_infos(ctx, node), shape, ctx.describe(node))


def _pin_dims(ctx: RuleContext, node: fx.Node, info: TensorInfo, dims: list[int], why: str) -> dict:
    """Pin the elements of ``dims`` and return the remaining axes."""
    dims = [d % info.ndim for d in dims] if info.ndim else []
    for d in dims:
        if d in info.axes:
            ctx.space.pin(info.axes[d], f"{ctx.describe(node)} {why}")
    return {d: a for d, a in info.axes.items() if d not in dims}


def _pinned_along(ctx: RuleContext, node: fx.Node, info: TensorInfo, dims: list[int],
                  why: str) -> TensorInfo:
    """A same-shape op whose ``dims`` mix positions: those dims pinned and inert after it,
    with the op named as the cause for the layers they reach."""
    axes = _pin_dims(ctx, node, info, dims, why)
    cause = f"{ctx.describe(node)} {why}"
    inert = {d % info.ndim: cause for d in dims} if info.ndim else {}
    return TensorInfo(info.shape, axes, why={**info.why, **inert})


def along_dim(ctx: RuleContext, node: fx.Node, info: Any, dim: Any) -> TensorInfo | None:
    """softmax and the like along ``dim``: its elements interact (pinned), the rest pass."""
    if not isinstance(info, TensorInfo) or not isinstance(dim, int):
        return ctx.unknown(node)
    return _pinned_along(ctx, node, info, [dim], "mixes values along it")


def _over_dim(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    return along_dim(ctx, node, ctx.info(node.args[0]), arg(node, 1, "dim", None))


def _normalize(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    info = ctx.info(node.args[0])
    dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 1)
    if not isinstance(info, TensorInfo) or not isinstance(dim, int):
        return ctx.unknown(node)
    return _pinned_along(ctx, node, info, [dim], "normalises along it")


def spatial(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    """Pooling / resizing: batch and channel dims pass; the others are rebuilt."""
    info = ctx.info(node.args[0])
    shape = ctx.shape(node)
    if not isinstance(info, TensorInfo) or shape is None or len(shape) != info.ndim:
        return ctx.unknown(node)
    keep = {0, 1} if info.ndim >= 3 else {0}
    axes = _pin_dims(ctx, node, info, [d for d in range(info.ndim) if d not in keep],
                     "resamples it")
    return info.with_axes(shape, axes)


def _reduce(ctx: RuleContext, node: fx.Node) -> Any:
    info = ctx.info(node.args[0])
    if not isinstance(info, TensorInfo):
        return ctx.unknown(node)
    dim = arg(node, 1, "dim", None)
    keepdim = bool(arg(node, 2, "keepdim", False))
    dims = list(range(info.ndim)) if dim is None else ([dim] if isinstance(dim, int) else dim)
    if not all(isinstance(d, int) for d in dims):
        return ctx.unknown(node)
    dims = [d % info.ndim for d in dims] if info.ndim else []
    if is_norm_statistic(node):  # a norm's statistic follows the kept channels
        axes = {d: a for d, a in info.axes.items() if d not in dims}
    else:
        axes = _pin_dims(ctx, node, info, dims, "reduces over it")
    if keepdim:
        out = TensorInfo(tuple(1 if d in dims else s for d, s in enumerate(info.shape)), axes)
    else:
        remap = [d for d in range(info.ndim) if d not in dims]
        out = TensorInfo(tuple(info.shape[d] for d in remap),
                         {i: axes[d] for i, d in enumerate(remap) if d in axes})
    meta = node.meta.get("tensor_meta")
    if isinstance(meta, (tuple, list)) and not hasattr(meta, "shape"):
        return tuple(out for _ in meta)  # e.g. torch.max(x, dim) → (values, indices)
    return out


def _reshape(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    info = ctx.info(node.args[0])
    shape = ctx.shape(node)
    if not isinstance(info, TensorInfo) or shape is None:
        return ctx.unknown(node)
    out = reshape_info(ctx.space, info, shape, ctx.describe(node), ctx.split_dims == "largest")
    ctx.resize_shape_args(node, out)
    return out


def _permute(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    info = ctx.info(node.args[0])
    if not isinstance(info, TensorInfo):
        return ctx.unknown(node)
    dims = node.args[1:] if len(node.args) > 2 else arg(node, 1, "dims")
    if isinstance(dims, int):
        dims = [dims]
    if not all(isinstance(d, int) for d in dims):
        return ctx.unknown(node)
    return permute_info(info, cast("list[int]", list(dims)))


def _transpose(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    info = ctx.info(node.args[0])
    if not isinstance(info, TensorInfo):
        return ctx.unknown(node)
    if info.ndim < 2:
        return info
    a = arg(node, 1, "dim0", 0)
    b = arg(node, 2, "dim1", 1)
    if not isinstance(a, int) or not isinstance(b, int):
        return ctx.unknown(node)
    order = list(range(info.ndim))
    order[a % info.ndim], order[b % info.ndim] = order[b % info.ndim], order[a % info.ndim]
    return permute_info(info, order)


def _expand(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    info = ctx.info(node.args[0])
    shape = ctx.shape(node)
    if not isinstance(info, TensorInfo) or shape is None:
        return ctx.unknown(node)
    lead = len(shape) - info.ndim
    axes = {d + lead: a for d, a in info.axes.items()}
    out = TensorInfo(tuple(shape), axes)
    ctx.resize_shape_args(node, out)
    return out


def _repeat(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    info = ctx.info(node.args[0])
    shape = ctx.shape(node)
    if not isinstance(info, TensorInfo) or shape is None:
        return ctx.unknown(node)
    lead = len(shape) - info.ndim
    axes = {}
    for d, ids in info.axes.items():
        axes[d + lead] = np.tile(ids, shape[d + lead] // len(ids))
    return TensorInfo(tuple(shape), axes)


def _flatten(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    return _reshape(ctx, node)


def _roll(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    """torch.roll: a cyclic shift moves positions along the rolled dims (pinned: pruning
    would change where they land); the other dims pass element-wise."""
    info = ctx.info(node.args[0])
    dims = arg(node, 2, "dims", None)
    if isinstance(dims, int):
        dims = [dims]
    if not isinstance(info, TensorInfo) or not dims \
            or not all(isinstance(d, int) for d in dims):
        return ctx.unknown(node)  # dims=None rolls the flattened tensor: all dims mix
    return _pinned_along(ctx, node, info, list(dims), "rolls along it")


def _pad(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    """F.pad: dims padded by a literal 0 on both sides pass; padded dims (or dims padded
    by computed amounts) get positions that belong to no layer, so they are pinned."""
    info = ctx.info(node.args[0])
    pad = arg(node, 1, "pad")
    shape = ctx.shape(node)
    if not isinstance(info, TensorInfo) or not isinstance(pad, (list, tuple)) \
            or len(pad) % 2 or len(pad) // 2 > info.ndim or shape is None:
        return ctx.unknown(node)
    padded = [info.ndim - 1 - k for k in range(len(pad) // 2)
              if any(not isinstance(p, int) or p != 0 for p in pad[2 * k:2 * k + 2])]
    return info.with_axes(shape, _pin_dims(ctx, node, info, padded, "pads it"))


def _factory(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    """torch.arange / zeros / ones / full / empty: a new tensor whose dims hold no channels
    of any layer (inert), whatever the sizes it was asked for."""
    shape = ctx.shape(node)
    return None if shape is None else TensorInfo(shape)


def _non_tensor(ctx: RuleContext, node: fx.Node) -> Any:
    return _sym_args(ctx, node) if ctx.shape(node) is None else ctx.unknown(node)


def sizes_of(info: Any) -> tuple[SymSize, ...] | None:
    if not isinstance(info, TensorInfo):
        return None
    return tuple(SymSize(d in info.axes) for d in range(info.ndim))


def _size(ctx: RuleContext, node: fx.Node) -> Any:
    """x.size() / x.size(d) / x.shape: ints that follow the widths of x's dims."""
    sizes = sizes_of(ctx.info(node.args[0]))
    if sizes is None:
        return None
    dim = arg(node, 1, "dim")
    if isinstance(dim, int):
        return sizes[dim]
    return sizes


def _getattr(ctx: RuleContext, node: fx.Node) -> Any:
    if node.args[1] == "shape":
        return sizes_of(ctx.info(node.args[0]))
    return _non_tensor(ctx, node)


def _numel(ctx: RuleContext, node: fx.Node) -> Any:
    sizes = sizes_of(ctx.info(node.args[0]))
    return SymSize(sizes is not None and any(s.prunable for s in sizes))


_POINTWISE_FUNCTIONS = [
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv,
    operator.pow, operator.neg, operator.pos, operator.mod, operator.iadd, operator.isub,
    operator.imul, operator.itruediv, operator.abs,
    torch.add, torch.sub, torch.subtract, torch.mul, torch.multiply, torch.div, torch.divide,
    torch.true_divide, torch.pow, torch.maximum, torch.minimum, torch.where, torch.abs,
    torch.neg, torch.exp, torch.log, torch.sqrt, torch.rsqrt, torch.sigmoid, torch.tanh,
    torch.relu, torch.clamp, torch.clip, torch.erf, torch.sin, torch.cos, torch.square,
    torch.reciprocal, torch.sign, torch.lerp, torch.addcmul, torch.addcdiv, torch.zeros_like,
    torch.ones_like, torch.empty_like, torch.full_like, torch.rand_like, torch.randn_like,
    torch.floor, torch.ceil, torch.round, torch.exp2, torch.log1p, torch.expm1,
    F.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.hardsigmoid, F.sigmoid, F.tanh, F.mish,
    F.elu, F.selu, F.celu, F.leaky_relu, F.hardtanh, F.softplus, F.logsigmoid, F.dropout,
    F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.relu_, F.softsign,
    F.tanhshrink, F.threshold,
    # comparisons compare equal positions (on ints: arithmetic on sizes, as above)
    operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
    torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge, torch.logical_and,
    torch.logical_or, torch.logical_not,
]
_POINTWISE_METHODS = [
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "abs", "neg", "exp", "log",
    "sqrt", "rsqrt", "pow", "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_",
    "clamp", "clamp_", "clamp_min", "clamp_max", "contiguous", "clone", "float", "half",
    "double", "bfloat16", "to", "type_as", "detach", "masked_fill", "masked_fill_", "sin",
    "cos", "square", "reciprocal", "sign", "floor", "ceil", "round", "erf", "exp_",
    "softplus", "sqrt_", "fill_", "zero_", "__add__", "__mul__", "__radd__", "__rmul__",
    "__sub__", "__rsub__", "__truediv__", "__rtruediv__", "lerp", "where", "maximum",
    "minimum", "cpu", "cuda", "requires_grad_", "long", "int", "bool", "eq", "ne", "lt",
    "le", "gt", "ge", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__",
]

FUNCTION_RULES: dict[Any, Rule] = {f: pointwise for f in _POINTWISE_FUNCTIONS}
FUNCTION_RULES.update(CONTRACTION_RULES)
FUNCTION_RULES.update(FUNCTIONAL_LAYER_RULES)
FUNCTION_RULES.update({
    torch.cat: cat, torch.concat: cat, torch.concatenate: cat, torch.stack: stack,
    torch.split: split, torch.chunk: chunk, operator.getitem: getitem, torch.unbind: unbind,
    torch.reshape: _reshape, torch.narrow: narrow, torch.flatten: _flatten, torch.squeeze: _reshape,
    torch.unsqueeze: _reshape, torch.unflatten: _reshape, torch.permute: _permute,
    torch.transpose: _transpose, torch.swapaxes: _transpose, torch.t: _transpose,
    operator.matmul: CONTRACTION_RULES[torch.matmul],
    torch.mean: _reduce, torch.sum: _reduce, torch.amax: _reduce, torch.amin: _reduce,
    F.log_softmax: _over_dim,
    torch.log_softmax: _over_dim, F.normalize: _normalize,
    F.adaptive_avg_pool1d: spatial, F.adaptive_avg_pool2d: spatial,
    F.adaptive_avg_pool3d: spatial, F.adaptive_max_pool2d: spatial,
    F.avg_pool1d: spatial, F.avg_pool2d: spatial, F.avg_pool3d: spatial,
    F.max_pool1d: spatial, F.max_pool2d: spatial, F.max_pool3d: spatial,
    F.interpolate: spatial, F.upsample: spatial,
    builtins.getattr: _getattr, torch._assert: _non_tensor,
    torch.roll: _roll, F.pad: _pad, torch.arange: _factory, torch.zeros: _factory,
    torch.ones: _factory, torch.full: _factory, torch.empty: _factory,
    # the guards of arguments traced at their defaults (see fxrazor.trace.signature)
    _signature.check_none: _non_tensor, _signature.check_bool: _non_tensor,
    _signature.check_int: _non_tensor, _signature.check_float: _non_tensor,
    _signature.check_str: _non_tensor,
})
FUNCTION_RULES.update(ROUTING_RULES)  # softmax, topk, sort, cumsum, expert counts

METHOD_RULES: dict[str, Rule] = {m: pointwise for m in _POINTWISE_METHODS}
METHOD_RULES.update({
    "narrow": narrow, "view": _reshape, "reshape": _reshape, "flatten": _flatten,
    "squeeze": _reshape,
    "unsqueeze": _reshape, "unflatten": _reshape, "view_as": _reshape, "reshape_as": _reshape,
    "permute": _permute, "transpose": _transpose, "swapaxes": _transpose, "t": _transpose,
    "expand": _expand, "expand_as": pointwise, "repeat": _repeat,
    "split": split, "chunk": chunk, "unbind": unbind, "matmul": CONTRACTION_RULES[torch.matmul],
    "bmm": CONTRACTION_RULES[torch.matmul],
    "mean": _reduce, "sum": _reduce, "amax": _reduce, "amin": _reduce,
    "log_softmax": _over_dim,
    "size": _size, "dim": _non_tensor, "numel": _numel, "roll": _roll,
})
METHOD_RULES.update(ROUTING_METHOD_RULES)

# Functions of optional libraries, keyed by qualified name so that the library need not be
# imported to analyse models that do not use it.
NAMED_FUNCTION_RULES: dict[str, Rule] = {
    "torchvision.ops.stochastic_depth.stochastic_depth": pointwise,
    "torch.fx._symbolic_trace._assert_is_none": _non_tensor,
    "transformers.grouped_mm_fallback.default": grouped_mm,  # MoE experts (export front-end)
}
