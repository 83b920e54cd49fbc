"""Channel rules for leaf modules, keyed by exact module type.

Layers with weights own *slots*: the prunable dimensions of their parameters (a conv's
``out`` and ``in`` channels, a norm's ``channels``). A slot's elements are allocated once per
module, so a module called twice joins the tensors of both calls to the same weights.
Subclasses of these types are not matched (their forward may differ): they are unknown
unless the user maps them explicitly.

Example:
    >>> from torch import nn
    >>> MODULE_RULES[nn.ReLU] is elementwise_module
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
from torch import fx, nn

from fxrazor.analysis.elements import TensorInfo, join_dim, reshape_info
from fxrazor.rules.functions import along_dim, spatial

__all__ = ["MODULE_RULES", "ModuleRule", "elementwise_module", "lookup_by_type"]

# The module argument is an instance of the rule's key type (which Callable cannot say).
ModuleRule = Callable[[Any, fx.Node, Any], Any]


def lookup_by_type(table: dict[type, Any], module: nn.Module) -> Any:
    """``table``'s entry for the module's type, or for the nearest base class in the table
    when the subclass keeps that base's ``forward`` (e.g. a Conv3d subclass that only
    changes ``__init__``). A subclass with its own forward matches nothing."""
    cls = type(module)
    if cls in table:
        return table[cls]
    for base in cls.__mro__[1:]:
        if base in table:
            return table[base] if cls.forward is cast("type[nn.Module]", base).forward else None
    return None


def _input(ctx: Any, node: fx.Node) -> TensorInfo | None:
    info = ctx.info(node.args[0]) if node.args else None
    return info if isinstance(info, TensorInfo) else None


def elementwise_module(ctx: Any, node: fx.Node, module: nn.Module) -> Any:
    info = _input(ctx, node)
    shape = ctx.shape(node)
    if info is None or shape != info.shape:
        return ctx.unknown(node)
    return info


def _tie_groups(ctx: Any, ids: np.ndarray, groups: int) -> None:
    """Join channel j of every group: pruning stays even across groups."""
    per = len(ids) // groups
    rows = ids.reshape(groups, per)
    for row in rows[1:]:
        ctx.space.join(rows[0], row)


def _conv(ctx: Any, node: fx.Node, m: nn.modules.conv._ConvNd) -> Any:
    info = _input(ctx, node)
    shape = ctx.shape(node)
    if info is None or shape is None or info.ndim != len(shape):
        return ctx.unknown(node)
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    why = ctx.describe(node)
    c_in, c_out, g = m.in_channels, m.out_channels, m.groups
    ins = ctx.slot(node.target, "in", c_in)
    outs = ctx.slot(node.target, "out", c_out)
    extra = [d for d in info.axes if d != 1]
    for d in extra:
        ctx.space.pin(info.axes[d], f"{why} mixes it spatially")
    join_dim(ctx.space, info.axes.get(1), ins, why + " (input is not prunable)")
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


def _linear(ctx: Any, node: fx.Node, m: nn.Module) -> Any:
    info = _input(ctx, node)
    shape = ctx.shape(node)
    if info is None or shape is None:
        return ctx.unknown(node)
    ins = ctx.slot(node.target, "in", m.in_features)
    outs = ctx.slot(node.target, "out", m.out_features)
    last = info.ndim - 1
    join_dim(ctx.space, info.axes.get(last), ins, ctx.describe(node) + " (input is not prunable)")
    axes = {d: a for d, a in info.axes.items() if d != last}
    axes[last] = outs
    return TensorInfo(tuple(shape), axes)


def _channel_norm(ctx: Any, node: fx.Node, m: nn.Module) -> Any:
    """BatchNorm / InstanceNorm: per-channel statistics and affine parameters on dim 1."""
    info = _input(ctx, node)
    if info is None or info.ndim < 2 or ctx.shape(node) != info.shape:
        return ctx.unknown(node)
    chans = ctx.slot(node.target, "channels", m.num_features)
    join_dim(ctx.space, info.axes.get(1), chans, ctx.describe(node) + " (input is not prunable)")
    axes = dict(info.axes)
    axes[1] = chans
    return TensorInfo(info.shape, axes)


def _group_norm(ctx: Any, node: fx.Node, m: nn.GroupNorm) -> Any:
    info = _input(ctx, node)
    if info is None or info.ndim < 2 or ctx.shape(node) != info.shape:
        return ctx.unknown(node)
    chans = ctx.slot(node.target, "channels", m.num_channels)
    join_dim(ctx.space, info.axes.get(1), chans, ctx.describe(node) + " (input is not prunable)")
    if 1 < m.num_groups < m.num_channels:
        _tie_groups(ctx, chans, m.num_groups)
    axes = dict(info.axes)
    axes[1] = chans
    return TensorInfo(info.shape, axes)


def _layer_norm(ctx: Any, node: fx.Node, m: nn.LayerNorm | nn.RMSNorm) -> Any:
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
    chans = ctx.slot(node.target, "channels", m.normalized_shape[0])
    join_dim(ctx.space, info.axes.get(last), chans, ctx.describe(node) + " (input is not prunable)")
    axes = dict(info.axes)
    axes[last] = chans
    return TensorInfo(info.shape, axes)


def _embedding(ctx: Any, node: fx.Node, m: nn.Embedding) -> Any:
    info = _input(ctx, node)
    shape = ctx.shape(node)
    if info is None or shape is None:
        return ctx.unknown(node)
    for ids in info.axes.values():
        ctx.space.pin(ids, f"{ctx.describe(node)} uses it as indices")
    outs = ctx.slot(node.target, "out", m.embedding_dim)
    return TensorInfo(tuple(shape), {len(shape) - 1: outs})


def _flatten_module(ctx: Any, node: fx.Node, m: nn.Module) -> Any:
    info = _input(ctx, node)
    shape = ctx.shape(node)
    if info is None or shape is None:
        return ctx.unknown(node)
    return reshape_info(ctx.space, info, shape, ctx.describe(node), ctx.split_dims == "largest")


def _softmax_module(ctx: Any, node: fx.Node, m: nn.Module) -> Any:
    return along_dim(ctx, node, _input(ctx, node), m.dim)


def _spatial_module(ctx: Any, node: fx.Node, m: nn.Module) -> Any:
    return spatial(ctx, node)


def _prelu(ctx: Any, node: fx.Node, m: nn.PReLU) -> Any:
    return elementwise_module(ctx, node, m) if m.num_parameters == 1 else ctx.unknown(node)


_ELEMENTWISE = [
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
    nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Dropout, nn.Dropout1d,
    nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.Hardtanh, nn.LogSigmoid,
    nn.Softsign, nn.Tanhshrink, nn.Threshold,
]
_SPATIAL = [
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample, nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d, nn.LPPool1d, nn.LPPool2d,
]
_CONVS = [nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
          nn.ConvTranspose3d]
_CHANNEL_NORMS = [nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
                  nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d]

MODULE_RULES: dict[type, ModuleRule] = {t: elementwise_module for t in _ELEMENTWISE}
MODULE_RULES.update({t: _spatial_module for t in _SPATIAL})
MODULE_RULES.update({t: _conv for t in _CONVS})
MODULE_RULES.update({t: _channel_norm for t in _CHANNEL_NORMS})
MODULE_RULES.update({
    nn.Linear: _linear, nn.GroupNorm: _group_norm, nn.LayerNorm: _layer_norm,
    nn.RMSNorm: _layer_norm,
    nn.Embedding: _embedding, nn.Flatten: _flatten_module, nn.Softmax: _softmax_module,
    nn.LogSoftmax: _softmax_module, nn.PReLU: _prelu,
})
