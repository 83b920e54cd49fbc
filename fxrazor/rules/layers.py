"""Channel rules for leaf modules: ``rule(ctx, node, module)``.

Layers with weights own *slots*: the prunable dimensions of their parameters (a conv's
``out`` and ``in`` channels, a norm's ``channels``). A slot's elements are allocated once per
module, so a module called twice joins the tensors of both calls to the same weights.
Which layer type uses which rule is said by its record (:mod:`fxrazor.layers`).

Example:
    >>> from torch import nn
    >>> from fxrazor.layers import LAYERS
    >>> LAYERS[nn.Conv2d].rule is conv
    True
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
from torch import fx, nn

from fxrazor.analysis.context import RuleContext
from fxrazor.analysis.elements import TensorInfo, join_dim, not_prunable, reshape_info
from fxrazor.rules.functions import along_dim, spatial

__all__ = ["elementwise_module", "spatial_module", "conv", "linear", "channel_norm", "group_norm",
           "layer_norm", "embedding", "flatten_module", "softmax_module", "prelu"]



def _path(node: fx.Node) -> str:
    """A call_module node's target: the layer's qualified name."""
    return cast(str, node.target)


def _input(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    info = ctx.info(node.args[0]) if node.args else None
    return info if isinstance(info, TensorInfo) else None


def elementwise_module(ctx: RuleContext, node: fx.Node, module: nn.Module) -> Any:
    info = _input(ctx, node)
    shape = ctx.shape(node)
    if info is None or shape != info.shape:
        return ctx.unknown(node)
    return info


def _tie_groups(ctx: RuleContext, ids: np.ndarray, groups: int) -> None:
    """Join channel j of every group: pruning stays even across groups."""
    per = len(ids) // groups
    rows = ids.reshape(groups, per)
    for row in rows[1:]:
        ctx.space.join(rows[0], row)


def conv(ctx: RuleContext, node: fx.Node, m: nn.modules.conv._ConvNd) -> Any:
    info = _input(ctx, node)
    shape = ctx.shape(node)
    if info is None or shape is None or info.ndim != len(shape):
        return ctx.unknown(node)
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    why = ctx.describe(node)
    c_in, c_out, g = m.in_channels, m.out_channels, m.groups
    ins = ctx.slot(_path(node), "in", c_in)
    outs = ctx.slot(_path(node), "out", c_out)
    extra = [d for d in info.axes if d != 1]
    for d in extra:
        ctx.space.pin(info.axes[d], f"{why} mixes it spatially")
    join_dim(ctx.space, info.axes.get(1), ins, not_prunable(info, 1, why))
    if g > 1:
        if transposed:
            ctx.space.pin(np.concatenate([ins, outs]), f"{why}: grouped transposed conv")
        elif c_in == g:  # depthwise (with multiplier): a group lives or dies whole
            mult = c_out // g
            for k in range(mult):
                ctx.space.join(ins, outs.reshape(g, mult)[:, k])
        else:
            _tie_groups(ctx, ins, g)
            _tie_groups(ctx, outs, g)
    return TensorInfo(tuple(shape), {1: outs})


def linear(ctx: RuleContext, node: fx.Node, m: nn.Linear) -> Any:
    info = _input(ctx, node)
    shape = ctx.shape(node)
    if info is None or shape is None:
        return ctx.unknown(node)
    ins = ctx.slot(_path(node), "in", m.in_features)
    outs = ctx.slot(_path(node), "out", m.out_features)
    last = info.ndim - 1
    join_dim(ctx.space, info.axes.get(last), ins, not_prunable(info, last, ctx.describe(node)))
    axes = {d: a for d, a in info.axes.items() if d != last}
    axes[last] = outs
    return TensorInfo(tuple(shape), axes)


def channel_norm(ctx: RuleContext, node: fx.Node, m: nn.modules.batchnorm._NormBase) -> Any:
    """BatchNorm / InstanceNorm: per-channel statistics and affine parameters on dim 1."""
    info = _input(ctx, node)
    if info is None or info.ndim < 2 or ctx.shape(node) != info.shape:
        return ctx.unknown(node)
    chans = ctx.slot(_path(node), "channels", m.num_features)
    join_dim(ctx.space, info.axes.get(1), chans, not_prunable(info, 1, ctx.describe(node)))
    axes = dict(info.axes)
    axes[1] = chans
    return TensorInfo(info.shape, axes)


def group_norm(ctx: RuleContext, node: fx.Node, m: nn.GroupNorm) -> Any:
    info = _input(ctx, node)
    if info is None or info.ndim < 2 or ctx.shape(node) != info.shape:
        return ctx.unknown(node)
    chans = ctx.slot(_path(node), "channels", m.num_channels)
    join_dim(ctx.space, info.axes.get(1), chans, not_prunable(info, 1, ctx.describe(node)))
    if 1 < m.num_groups < m.num_channels:
        _tie_groups(ctx, chans, m.num_groups)
    axes = dict(info.axes)
    axes[1] = chans
    return TensorInfo(info.shape, axes)


def layer_norm(ctx: RuleContext, node: fx.Node, m: nn.LayerNorm | nn.RMSNorm) -> Any:
    """LayerNorm / RMSNorm: over the last dim its statistics follow the kept channels."""
    info = _input(ctx, node)
    if info is None or ctx.shape(node) != info.shape:
        return ctx.unknown(node)
    k = len(m.normalized_shape)
    if k != 1:
        axes = {d: a for d, a in info.axes.items() if d < info.ndim - k}
        for d in range(info.ndim - k, info.ndim):
            if d in info.axes:
                ctx.space.pin(info.axes[d], f"{ctx.describe(node)} normalises several dims")
        return TensorInfo(info.shape, axes)
    last = info.ndim - 1
    chans = ctx.slot(_path(node), "channels", m.normalized_shape[0])
    join_dim(ctx.space, info.axes.get(last), chans,
             not_prunable(info, last, ctx.describe(node)))
    axes = dict(info.axes)
    axes[last] = chans
    return TensorInfo(info.shape, axes)


def embedding(ctx: RuleContext, node: fx.Node, m: nn.Embedding) -> Any:
    info = _input(ctx, node)
    shape = ctx.shape(node)
    if info is None or shape is None:
        return ctx.unknown(node)
    for ids in info.axes.values():
        ctx.space.pin(ids, f"{ctx.describe(node)} uses it as indices")
    outs = ctx.slot(_path(node), "out", m.embedding_dim)
    return TensorInfo(tuple(shape), {len(shape) - 1: outs})


def flatten_module(ctx: RuleContext, node: fx.Node, m: nn.Module) -> Any:
    info = _input(ctx, node)
    shape = ctx.shape(node)
    if info is None or shape is None:
        return ctx.unknown(node)
    return reshape_info(ctx.space, info, shape, ctx.describe(node), ctx.split_dims == "largest")


def softmax_module(ctx: RuleContext, node: fx.Node, m: nn.Module) -> Any:
    return along_dim(ctx, node, _input(ctx, node), m.dim)


def spatial_module(ctx: RuleContext, node: fx.Node, m: nn.Module) -> Any:
    return spatial(ctx, node)


def prelu(ctx: RuleContext, node: fx.Node, m: nn.PReLU) -> Any:
    return elementwise_module(ctx, node, m) if m.num_parameters == 1 else ctx.unknown(node)
