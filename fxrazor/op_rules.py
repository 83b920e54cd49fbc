"""Channel rules for functions and tensor methods.

A rule receives the analysis context and a node and returns the node's element info
(:class:`~fxrazor.channels.TensorInfo`, a tuple of them, or None for non-tensors). Rules are
looked up in explicit dicts keyed by the function object or the method name; anything not
in them is *unknown*: the context pins every prunable element of its inputs.

Example:
    >>> import operator
    >>> FUNCTION_RULES[operator.add] is pointwise
    True
"""

from __future__ import annotations

import builtins
import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx

from fxrazor.channels import SymSize, TensorInfo, broadcast_join, permute_info, reshape_info

__all__ = ["FUNCTION_RULES", "METHOD_RULES", "NAMED_FUNCTION_RULES", "Rule", "pointwise", "arg", "along_dim", "spatial"]

Rule = Callable[[Any, fx.Node], Any]


def arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    """The call argument at position ``index`` or keyword ``name``."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _tensor_infos(ctx: Any, node: fx.Node) -> list[TensorInfo]:
    found: list[TensorInfo] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(ctx.info(n)) or n)
    return [i for i in found if isinstance(i, TensorInfo)]


def _sym_args(ctx: Any, node: fx.Node) -> SymSize:
    found: list[Any] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(ctx.info(n)) or n)
    return SymSize(any(isinstance(i, SymSize) and i.prunable for i in found)
                   or any(isinstance(i, (list, tuple)) and any(
                       isinstance(j, SymSize) and j.prunable for j in i) for i in found))


def pointwise(ctx: Any, node: fx.Node) -> TensorInfo | SymSize | None:
    """Element-wise op with broadcasting over all tensor arguments (on ints: arithmetic on
    sizes, which stays prunable if any operand is)."""
    shape = ctx.shape(node)
    if shape is None:
        return _sym_args(ctx, node)
    return broadcast_join(ctx.space, _tensor_infos(ctx, node), shape, ctx.describe(node))


def _pin_dims(ctx: Any, node: fx.Node, info: TensorInfo, dims: list[int], why: str) -> dict:
    """Pin the elements of ``dims`` and return the remaining axes."""
    dims = [d % info.ndim for d in dims] if info.ndim else []
    for d in dims:
        if d in info.axes:
            ctx.space.pin(info.axes[d], f"{ctx.describe(node)} {why}")
    return {d: a for d, a in info.axes.items() if d not in dims}


def along_dim(ctx: Any, node: fx.Node, info: Any, dim: Any) -> TensorInfo | None:
    """softmax and the like along ``dim``: its elements interact (pinned), the rest pass."""
    if not isinstance(info, TensorInfo) or not isinstance(dim, int):
        return ctx.unknown(node)
    return TensorInfo(info.shape, _pin_dims(ctx, node, info, [dim], "mixes values along it"))


def _over_dim(ctx: Any, node: fx.Node) -> TensorInfo | None:
    return along_dim(ctx, node, ctx.info(node.args[0]), arg(node, 1, "dim", None))


def _normalize(ctx: Any, node: fx.Node) -> TensorInfo | None:
    info = ctx.info(node.args[0])
    dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 1)
    if not isinstance(info, TensorInfo) or not isinstance(dim, int):
        return ctx.unknown(node)
    return TensorInfo(info.shape, _pin_dims(ctx, node, info, [dim], "normalises along it"))


def spatial(ctx: Any, node: fx.Node) -> TensorInfo | None:
    """Pooling / resizing: batch and channel dims pass; the others are rebuilt."""
    info = ctx.info(node.args[0])
    shape = ctx.shape(node)
    if not isinstance(info, TensorInfo) or shape is None or len(shape) != info.ndim:
        return ctx.unknown(node)
    keep = {0, 1} if info.ndim >= 3 else {0}
    axes = _pin_dims(ctx, node, info, [d for d in range(info.ndim) if d not in keep],
                     "resamples it")
    return info.with_axes(shape, axes)


def _reduce(ctx: Any, node: fx.Node) -> Any:
    info = ctx.info(node.args[0])
    if not isinstance(info, TensorInfo):
        return ctx.unknown(node)
    dim = arg(node, 1, "dim", None)
    keepdim = bool(arg(node, 2, "keepdim", False))
    dims = list(range(info.ndim)) if dim is None else ([dim] if isinstance(dim, int) else dim)
    if not all(isinstance(d, int) for d in dims):
        return ctx.unknown(node)
    dims = [d % info.ndim for d in dims] if info.ndim else []
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


def _cat(ctx: Any, node: fx.Node) -> TensorInfo | None:
    tensors = arg(node, 0, "tensors")
    dim = arg(node, 1, "dim", 0)
    infos = [ctx.info(t) for t in tensors]
    shape = ctx.shape(node)
    if shape is None or not all(isinstance(i, TensorInfo) for i in infos):
        return ctx.unknown(node)
    d = dim % len(shape)
    others = [TensorInfo(i.shape, {k: a for k, a in i.axes.items() if k != d}) for i in infos]
    rest = broadcast_join(ctx.space, others, shape, ctx.describe(node))
    axes = dict(rest.axes)
    if any(d in i.axes for i in infos):
        parts = []
        for i in infos:
            ids = i.axes.get(d)
            if ids is None:  # inert input: its positions exist but can never be removed
                ids = ctx.space.fresh(i.shape[d])
                ctx.space.pin(ids, f"{ctx.describe(node)} concatenates it with an inert input")
            parts.append(ids)
        axes[d] = np.concatenate(parts)
    return TensorInfo(tuple(shape), axes)


def _stack(ctx: Any, node: fx.Node) -> TensorInfo | None:
    tensors = arg(node, 0, "tensors")
    dim = arg(node, 1, "dim", 0)
    infos = [ctx.info(t) for t in tensors]
    shape = ctx.shape(node)
    if shape is None or not all(isinstance(i, TensorInfo) for i in infos):
        return ctx.unknown(node)
    d = dim % len(shape)
    joined = broadcast_join(ctx.space, infos, infos[0].shape, ctx.describe(node))
    axes = {(k if k < d else k + 1): a for k, a in joined.axes.items()}
    return TensorInfo(tuple(shape), axes)


def _split_like(ctx: Any, node: fx.Node, sizes: list[int], dim: int, locator: Any) -> Any:
    info = ctx.info(node.args[0])
    if not isinstance(info, TensorInfo):
        return ctx.unknown(node)
    d = dim % info.ndim
    ids = info.axes.get(d)
    outs, start = [], 0
    for s in sizes:
        shape = tuple(s if k == d else n for k, n in enumerate(info.shape))
        axes = dict(info.axes)
        if ids is not None:
            axes[d] = ids[start:start + s]
        outs.append(info.with_axes(shape, axes))
        start += s
    if ids is not None:
        ctx.resize_split(node, ids, sizes, d, locator)
    return tuple(outs)


def _split(ctx: Any, node: fx.Node) -> Any:
    info = ctx.info(node.args[0])
    size = arg(node, 1, "split_size_or_sections", node.kwargs.get("split_size"))
    dim = arg(node, 2, "dim", 0)
    if not isinstance(info, TensorInfo) or not isinstance(dim, int):
        return ctx.unknown(node)
    n = info.shape[dim % info.ndim]
    if isinstance(size, int):
        sizes = [min(size, n - s) for s in range(0, n, size)]
    elif isinstance(size, (list, tuple)) and all(isinstance(s, int) for s in size):
        sizes = list(size)
    else:
        return ctx.unknown(node)
    return _split_like(ctx, node, sizes, dim, "split")


def _chunk(ctx: Any, node: fx.Node) -> Any:
    info = ctx.info(node.args[0])
    chunks = arg(node, 1, "chunks")
    dim = arg(node, 2, "dim", 0)
    if not isinstance(info, TensorInfo) or not isinstance(chunks, int) or not isinstance(dim, int):
        return ctx.unknown(node)
    n = info.shape[dim % info.ndim]
    step = math.ceil(n / chunks)
    sizes = [min(step, n - s) for s in range(0, n, step)]
    return _split_like(ctx, node, sizes, dim, "chunk")


def _getitem(ctx: Any, node: fx.Node) -> Any:
    src, index = node.args
    info = ctx.info(src)
    if isinstance(info, (tuple, list)):
        if isinstance(index, int):
            return info[index]
        if isinstance(index, slice) and all(isinstance(i, SymSize) for i in info):
            return info[index]
        return ctx.unknown(node)
    if not isinstance(info, TensorInfo):
        return None if ctx.shape(node) is None else ctx.unknown(node)
    if isinstance(index, fx.Node) and ctx.shape(index) is not None:
        return _gather_rows(ctx, node, info, index)
    from fxrazor.indexing import index_info

    return index_info(ctx, node, info, index)


def _gather_rows(ctx: Any, node: fx.Node, info: TensorInfo, index: fx.Node) -> Any:
    """``x[idx]`` with an index tensor: dim 0 is gathered (pinned), the others pass."""
    shape, idx_shape = ctx.shape(node), ctx.shape(index)
    if shape is None or len(shape) != len(idx_shape) + info.ndim - 1:
        return ctx.unknown(node)
    why = f"{ctx.describe(node)} gathers along it"
    if 0 in info.axes:
        ctx.space.pin(info.axes[0], why)
    idx_info = ctx.info(index)
    if isinstance(idx_info, TensorInfo):
        for ids in idx_info.all_ids():
            ctx.space.pin(ids, why)
    lead = len(idx_shape) - 1
    return TensorInfo(tuple(shape), {d + lead: a for d, a in info.axes.items() if d >= 1})


def _narrow(ctx: Any, node: fx.Node) -> Any:
    """x.narrow(dim, start, length): a range of a dim, like a slice."""
    info = ctx.info(node.args[0])
    dim, start, length = (arg(node, i, n) for i, n in ((1, "dim"), (2, "start"), (3, "length")))
    shape = ctx.shape(node)
    if not isinstance(info, TensorInfo) or not isinstance(dim, int) or shape is None:
        return ctx.unknown(node)
    d = dim % info.ndim
    ids = info.axes.get(d)
    axes = dict(info.axes)
    if ids is None:
        return info.with_axes(shape, axes)
    if not isinstance(start, int) or not isinstance(length, int) or start < 0:
        ctx.space.pin(ids, f"{ctx.describe(node)} takes a computed range of it")
        return info.with_axes(shape, axes)
    if start > 0:
        ctx.resize_arg(node, (2,), ids[:start])
    ctx.resize_arg(node, (3,), ids[start:start + length])
    axes[d] = ids[start:start + length]
    return info.with_axes(shape, axes)


def _reshape(ctx: Any, node: fx.Node) -> TensorInfo | None:
    info = ctx.info(node.args[0])
    shape = ctx.shape(node)
    if not isinstance(info, TensorInfo) or shape is None:
        return ctx.unknown(node)
    out = reshape_info(ctx.space, info, shape, ctx.describe(node), ctx.split_dims == "largest")
    ctx.resize_shape_args(node, out)
    return out


def _permute(ctx: Any, node: fx.Node) -> TensorInfo | None:
    info = ctx.info(node.args[0])
    if not isinstance(info, TensorInfo):
        return ctx.unknown(node)
    dims = node.args[1:] if len(node.args) > 2 else arg(node, 1, "dims")
    if isinstance(dims, int):
        dims = [dims]
    if not all(isinstance(d, int) for d in dims):
        return ctx.unknown(node)
    return permute_info(info, list(dims))


def _transpose(ctx: Any, node: fx.Node) -> TensorInfo | None:
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


def _expand(ctx: Any, node: fx.Node) -> TensorInfo | None:
    info = ctx.info(node.args[0])
    shape = ctx.shape(node)
    if not isinstance(info, TensorInfo) or shape is None:
        return ctx.unknown(node)
    lead = len(shape) - info.ndim
    axes = {d + lead: a for d, a in info.axes.items()}
    out = TensorInfo(tuple(shape), axes)
    ctx.resize_shape_args(node, out)
    return out


def _repeat(ctx: Any, node: fx.Node) -> TensorInfo | None:
    info = ctx.info(node.args[0])
    shape = ctx.shape(node)
    if not isinstance(info, TensorInfo) or shape is None:
        return ctx.unknown(node)
    lead = len(shape) - info.ndim
    axes = {}
    for d, ids in info.axes.items():
        axes[d + lead] = np.tile(ids, shape[d + lead] // len(ids))
    return TensorInfo(tuple(shape), axes)


def _matmul(ctx: Any, node: fx.Node) -> TensorInfo | None:
    a, b = (ctx.info(x) for x in node.args[:2])
    shape = ctx.shape(node)
    if not isinstance(a, TensorInfo) or not isinstance(b, TensorInfo) or shape is None \
            or a.ndim < 2 or b.ndim < 2:
        return ctx.unknown(node)
    space, why = ctx.space, ctx.describe(node)
    # contracted dims of both operands must be removed together
    ka, kb = a.axes.get(a.ndim - 1), b.axes.get(b.ndim - 2)
    if ka is not None and kb is not None:
        space.join(ka, kb)
    elif ka is not None or kb is not None:
        space.pin(ka if ka is not None else kb, why + " contracts it with an inert dim")
    batch_a = TensorInfo(a.shape[:-2], {d: x for d, x in a.axes.items() if d < a.ndim - 2})
    batch_b = TensorInfo(b.shape[:-2], {d: x for d, x in b.axes.items() if d < b.ndim - 2})
    batch = broadcast_join(space, [batch_a, batch_b], tuple(shape[:-2]), why)
    axes = dict(batch.axes)
    n = len(shape)
    if a.ndim - 2 in a.axes:
        axes[n - 2] = a.axes[a.ndim - 2]
    if b.ndim - 1 in b.axes:
        axes[n - 1] = b.axes[b.ndim - 1]
    return TensorInfo(tuple(shape), axes)


def _layer_norm_fn(ctx: Any, node: fx.Node) -> TensorInfo | None:
    """F.layer_norm over the last dim: weight and bias follow it, and the normalized_shape
    literal is rewritten to the kept width."""
    info = ctx.info(node.args[0])
    shape = arg(node, 1, "normalized_shape")
    if not isinstance(info, TensorInfo) or not isinstance(shape, (list, tuple)) \
            or len(shape) != 1 or len(node.args) < 2:
        return ctx.unknown(node)
    last = info.ndim - 1
    ids = info.axes.get(last)
    params = [arg(node, 2, "weight"), arg(node, 3, "bias")]
    for p in params:
        p_info = ctx.info(p)
        if isinstance(p_info, TensorInfo):
            p_ids = p_info.axes.get(0)
            if ids is None and p_ids is not None:
                ctx.space.pin(p_ids, f"{ctx.describe(node)} normalises an inert dim")
            elif ids is not None and p_ids is not None:
                ctx.space.join(ids, p_ids)
            elif ids is not None:
                ctx.space.pin(ids, f"{ctx.describe(node)} has a non-prunable weight")
        elif p is not None:
            return ctx.unknown(node)
    if ids is not None and isinstance(shape[0], int):
        ctx.resize_arg(node, (1, 0), ids)
    return info


def _sdpa(ctx: Any, node: fx.Node) -> TensorInfo | None:
    """scaled_dot_product_attention(q, k, v): q·k contracts the head dim, the weights
    contract the key length with v; heads and batch join across q, k and v."""
    q, k, v = (ctx.info(x) for x in node.args[:3])
    mask = arg(node, 3, "attn_mask")
    shape = ctx.shape(node)
    if not all(isinstance(i, TensorInfo) and i.ndim >= 2 for i in (q, k, v)) or shape is None:
        return ctx.unknown(node)
    space, why = ctx.space, ctx.describe(node)
    _join_or_pin(space, q.axes.get(q.ndim - 1), k.axes.get(k.ndim - 1), why)
    _join_or_pin(space, k.axes.get(k.ndim - 2), v.axes.get(v.ndim - 2), why)
    lead = [TensorInfo(i.shape[:-2], {d: a for d, a in i.axes.items() if d < i.ndim - 2})
            for i in (q, k, v)]
    mask_info = ctx.info(mask)
    if isinstance(mask_info, TensorInfo):
        scores = TensorInfo(q.shape[:-1] + (k.shape[-2],),
                            {d: a for d, a in q.axes.items() if d < q.ndim - 1})
        broadcast_join(space, [scores, mask_info], scores.shape, why)
    batch = broadcast_join(space, lead, tuple(shape[:-2]), why)
    axes = dict(batch.axes)
    for d, i in ((len(shape) - 2, q.axes.get(q.ndim - 2)), (len(shape) - 1, v.axes.get(v.ndim - 1))):
        if i is not None:
            axes[d] = i
    return TensorInfo(tuple(shape), axes)


def _join_or_pin(space: Any, a: Any, b: Any, why: str) -> None:
    if a is not None and b is not None:
        space.join(a, b)
    elif a is not None or b is not None:
        space.pin(a if a is not None else b, why + " contracts it with an inert dim")


def _linear_fn(ctx: Any, node: fx.Node) -> TensorInfo | None:
    """F.linear(x, weight, bias) on parameters used in the graph: the weight's columns
    follow x's last dim, its rows (and the bias) make the output's last dim."""
    info, weight = ctx.info(node.args[0]), ctx.info(arg(node, 1, "weight"))
    bias_node = arg(node, 2, "bias")
    bias = ctx.info(bias_node)
    shape = ctx.shape(node)
    if not isinstance(info, TensorInfo) or not isinstance(weight, TensorInfo) \
            or weight.ndim != 2 or shape is None or (bias_node is not None and not
                                                       isinstance(bias, TensorInfo)):
        return ctx.unknown(node)
    why = ctx.describe(node)
    last = info.ndim - 1
    _join_or_pin(ctx.space, info.axes.get(last), weight.axes.get(1), why)
    rows = weight.axes.get(0)
    if isinstance(bias, TensorInfo):
        _join_or_pin(ctx.space, rows, bias.axes.get(0), why)
    axes = {d: a for d, a in info.axes.items() if d != last}
    if rows is not None:
        axes[len(shape) - 1] = rows
    return TensorInfo(tuple(shape), axes)


def _einsum(ctx: Any, node: fx.Node) -> TensorInfo | None:
    """einsum without '...': dims sharing a letter join across operands; a letter that
    only one operand has and the output lacks is a sum over it (pinned)."""
    equation, *operands = node.args
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    infos = [ctx.info(o) for o in operands]
    shape = ctx.shape(node)
    if not isinstance(equation, str) or "." in equation or "->" not in equation \
            or shape is None or not all(isinstance(i, TensorInfo) for i in infos):
        return ctx.unknown(node)
    inputs, output = equation.replace(" ", "").split("->")
    terms = inputs.split(",")
    if len(terms) != len(infos) or any(len(t) != i.ndim for t, i in zip(terms, infos,
                                                                         strict=True)):
        return ctx.unknown(node)
    why = ctx.describe(node)
    letter_ids: dict[str, Any] = {}
    for letter in dict.fromkeys("".join(terms)):
        found = [(i.axes.get(t.index(letter)), i.shape[t.index(letter)])
                 for t, i in zip(terms, infos, strict=True) if letter in t]
        sized = [(ids, n) for ids, n in found if n > 1]
        prunable = [ids for ids, _ in sized if ids is not None]
        if not prunable:
            continue
        for other in prunable[1:]:
            ctx.space.join(prunable[0], other)
        if len(prunable) < len(sized) or (letter not in output and len(sized) == 1):
            ctx.space.pin(prunable[0], f"{why} sums or mixes it with an inert dim")
        else:
            letter_ids[letter] = prunable[0]
    axes = {d: letter_ids[c] for d, c in enumerate(output) if c in letter_ids}
    return TensorInfo(tuple(shape), axes)


def _flatten(ctx: Any, node: fx.Node) -> TensorInfo | None:
    return _reshape(ctx, node)


def _non_tensor(ctx: Any, node: fx.Node) -> Any:
    return _sym_args(ctx, node) if ctx.shape(node) is None else ctx.unknown(node)


def sizes_of(info: Any) -> tuple[SymSize, ...] | None:
    if not isinstance(info, TensorInfo):
        return None
    return tuple(SymSize(d in info.axes) for d in range(info.ndim))


def _size(ctx: Any, node: fx.Node) -> Any:
    """x.size() / x.size(d) / x.shape: ints that follow the widths of x's dims."""
    sizes = sizes_of(ctx.info(node.args[0]))
    if sizes is None:
        return None
    dim = arg(node, 1, "dim")
    if isinstance(dim, int):
        return sizes[dim]
    return sizes


def _getattr(ctx: Any, node: fx.Node) -> Any:
    if node.args[1] == "shape":
        return sizes_of(ctx.info(node.args[0]))
    return _non_tensor(ctx, node)


def _numel(ctx: Any, node: fx.Node) -> Any:
    sizes = sizes_of(ctx.info(node.args[0]))
    return SymSize(bool(sizes) and any(s.prunable for s in sizes))


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
]
_POINTWISE_METHODS = [
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "abs", "neg", "exp", "log",
    "sqrt", "rsqrt", "pow", "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_",
    "clamp", "clamp_", "clamp_min", "clamp_max", "contiguous", "clone", "float", "half",
    "double", "bfloat16", "to", "type_as", "detach", "masked_fill", "masked_fill_", "sin",
    "cos", "square", "reciprocal", "sign", "floor", "ceil", "round", "erf", "exp_",
    "softplus", "sqrt_", "fill_", "zero_", "__add__", "__mul__", "__radd__", "__rmul__",
    "__sub__", "__rsub__", "__truediv__", "__rtruediv__", "lerp", "where", "maximum",
    "minimum", "cpu", "cuda", "requires_grad_",
]

FUNCTION_RULES: dict[Any, Rule] = {f: pointwise for f in _POINTWISE_FUNCTIONS}
FUNCTION_RULES.update({
    torch.cat: _cat, torch.concat: _cat, torch.concatenate: _cat, torch.stack: _stack,
    torch.split: _split, torch.chunk: _chunk, operator.getitem: _getitem,
    torch.reshape: _reshape, torch.narrow: _narrow, torch.flatten: _flatten, torch.squeeze: _reshape,
    torch.unsqueeze: _reshape, torch.unflatten: _reshape, torch.permute: _permute,
    torch.transpose: _transpose, torch.swapaxes: _transpose, torch.t: _transpose,
    torch.einsum: _einsum, torch.functional.einsum: _einsum,
    torch.matmul: _matmul, operator.matmul: _matmul, torch.bmm: _matmul,
    torch.mean: _reduce, torch.sum: _reduce, torch.amax: _reduce, torch.amin: _reduce,
    F.scaled_dot_product_attention: _sdpa, F.linear: _linear_fn,
    F.layer_norm: _layer_norm_fn, torch.layer_norm: _layer_norm_fn,
    torch.softmax: _over_dim, F.softmax: _over_dim, F.log_softmax: _over_dim,
    torch.log_softmax: _over_dim, F.normalize: _normalize,
    F.adaptive_avg_pool1d: spatial, F.adaptive_avg_pool2d: spatial,
    F.adaptive_avg_pool3d: spatial, F.adaptive_max_pool2d: spatial,
    F.avg_pool1d: spatial, F.avg_pool2d: spatial, F.avg_pool3d: spatial,
    F.max_pool1d: spatial, F.max_pool2d: spatial, F.max_pool3d: spatial,
    F.interpolate: spatial, F.upsample: spatial,
    builtins.getattr: _getattr, operator.eq: _non_tensor, operator.ne: _non_tensor,
    operator.lt: _non_tensor, operator.le: _non_tensor, operator.gt: _non_tensor,
    operator.ge: _non_tensor, torch._assert: _non_tensor,
})

METHOD_RULES: dict[str, Rule] = {m: pointwise for m in _POINTWISE_METHODS}
METHOD_RULES.update({
    "narrow": _narrow, "view": _reshape, "reshape": _reshape, "flatten": _flatten, "squeeze": _reshape,
    "unsqueeze": _reshape, "unflatten": _reshape, "view_as": _reshape, "reshape_as": _reshape,
    "permute": _permute, "transpose": _transpose, "swapaxes": _transpose, "t": _transpose,
    "expand": _expand, "expand_as": pointwise, "repeat": _repeat,
    "split": _split, "chunk": _chunk, "matmul": _matmul, "bmm": _matmul,
    "mean": _reduce, "sum": _reduce, "amax": _reduce, "amin": _reduce,
    "softmax": _over_dim, "log_softmax": _over_dim,
    "size": _size, "dim": _non_tensor, "numel": _numel,
})

# Functions of optional libraries, keyed by qualified name so that the library need not be
# imported to analyse models that do not use it.
NAMED_FUNCTION_RULES: dict[str, Rule] = {
    "torchvision.ops.stochastic_depth.stochastic_depth": pointwise,
    "torch.fx._symbolic_trace._assert_is_none": _non_tensor,
}
