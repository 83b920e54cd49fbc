"""Channel rules for joining and slicing: cat, stack, split, chunk, indexing, narrow.

Concatenation gives the output dim the inputs' element ids one after another (an input
without channel ids there gets fresh, pinned ones); split-like ops hand each output its
range of ids and record the size literals that must follow pruning. Indexing with slices
and ``None`` is in :mod:`fxrazor.rules.indexing`.

Example:
    >>> from fxrazor.rules.functions import FUNCTION_RULES
    >>> import torch
    >>> FUNCTION_RULES[torch.cat] is cat
    True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import fx

from fxrazor.analysis.context import RuleContext
from fxrazor.analysis.elements import SymSize, TensorInfo, broadcast_join
from fxrazor.rules.args import arg
from fxrazor.rules.indexing import index_info

__all__ = ["cat", "stack", "split", "chunk", "getitem", "narrow"]


def _tensor_list(ctx: RuleContext, node: fx.Node
                 ) -> tuple[list[TensorInfo], tuple[int, ...], int] | None:
    """The infos of cat/stack's tensor list, the output shape and the dim (None: unknown)."""
    infos = [ctx.info(t) for t in arg(node, 0, "tensors")]
    dim = arg(node, 1, "dim", 0)
    shape = ctx.shape(node)
    if shape is None or not isinstance(dim, int) \
            or not all(isinstance(i, TensorInfo) for i in infos):
        return None
    return infos, shape, dim % len(shape)


def cat(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    found = _tensor_list(ctx, node)
    if found is None:
        return ctx.unknown(node)
    infos, shape, d = found
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


def stack(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    found = _tensor_list(ctx, node)
    if found is None:
        return ctx.unknown(node)
    infos, shape, d = found
    joined = broadcast_join(ctx.space, infos, infos[0].shape, ctx.describe(node))
    axes = {(k if k < d else k + 1): a for k, a in joined.axes.items()}
    return TensorInfo(tuple(shape), axes)


def _split_like(ctx: RuleContext, node: fx.Node, sizes: list[int], dim: int,
                locator: Any) -> Any:
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


def split(ctx: RuleContext, node: fx.Node) -> Any:
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


def chunk(ctx: RuleContext, node: fx.Node) -> Any:
    info = ctx.info(node.args[0])
    chunks = arg(node, 1, "chunks")
    dim = arg(node, 2, "dim", 0)
    if not isinstance(info, TensorInfo) or not isinstance(chunks, int) or not isinstance(dim, int):
        return ctx.unknown(node)
    n = info.shape[dim % info.ndim]
    step = math.ceil(n / chunks)
    sizes = [min(step, n - s) for s in range(0, n, step)]
    return _split_like(ctx, node, sizes, dim, "chunk")


def unbind(ctx: RuleContext, node: fx.Node) -> Any:
    """``x.unbind(dim)`` (``q, k, v = qkv.unbind(0)``): one tensor per position of ``dim``
    (pinned there: each is its own tensor), the other dims pass to every one."""
    info = ctx.info(node.args[0])
    dim = arg(node, 1, "dim", 0)
    if not isinstance(info, TensorInfo) or not isinstance(dim, int) or not info.ndim:
        return ctx.unknown(node)
    dim %= info.ndim
    if dim in info.axes:
        ctx.space.pin(info.axes[dim], f"{ctx.describe(node)} splits it into separate tensors")
    shape = info.shape[:dim] + info.shape[dim + 1:]
    axes = {d - (d > dim): a for d, a in info.axes.items() if d != dim}
    return tuple(TensorInfo(shape, axes) for _ in range(info.shape[dim]))


def getitem(ctx: RuleContext, node: fx.Node) -> Any:
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
    return index_info(ctx, node, info, index)


def _gather_rows(ctx: RuleContext, node: fx.Node, info: TensorInfo, index: fx.Node) -> Any:
    """``x[idx]`` with an index tensor: dim 0 is gathered (pinned), the others pass."""
    shape, idx_shape = ctx.shape(node), ctx.shape(index)
    if shape is None or idx_shape is None or len(shape) != len(idx_shape) + info.ndim - 1:
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


def narrow(ctx: RuleContext, node: fx.Node) -> Any:
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
        del axes[d]  # which positions survive is unknown here: the output dim is inert
        return info.with_axes(shape, axes)
    if start > 0:
        ctx.resize_arg(node, (2,), ids[:start])
    ctx.resize_arg(node, (3,), ids[start:start + length])
    axes[d] = ids[start:start + length]
    return info.with_axes(shape, axes)
