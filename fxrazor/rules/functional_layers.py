"""Channel rules of layers written as functions on the graph's own parameters:
``F.conv1d/2d/3d`` (and ``torch.conv*``), ``F.conv_transpose*``, ``F.batch_norm``,
``F.instance_norm`` and ``F.group_norm``.

Libraries such as timm fuse a norm with its activation (``BatchNormAct2d`` calls
``F.batch_norm`` on its own weight and statistics) or standardise a conv's weight before
calling ``F.conv2d``. Traced, these are functions whose weight, bias and running statistics
are ``get_attr`` nodes, i.e. parameter slots (``dim<k>``): the rules below tie those dims
to the activations' channels exactly as the module rules of :mod:`fxrazor.rules.layers`
tie a layer's own slots, so pruning slices them (``DynamicParam``) and freeze stores the
sliced tensors.

Normalising over a prunable dim (batch statistics over a standardised weight's input
channels, a group norm's groups) is allowed, as for ``nn.LayerNorm``: the kept positions
make the statistics. The rule records it (``RuleContext.normalises``) so that the
zero-invariance oracle, which cannot hold there, is reported as not applicable.

Example:
    >>> import torch.nn.functional as F
    >>> FUNCTIONAL_LAYER_RULES[F.conv2d].__name__
    'conv_fn'
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx

from fxrazor.analysis.context import RuleContext
from fxrazor.analysis.elements import TensorInfo
from fxrazor.rules.args import arg

__all__ = ["FUNCTIONAL_LAYER_RULES", "CONV_FUNCTIONS", "conv_fn", "conv_transpose_fn", "batch_norm_fn",
           "instance_norm_fn", "group_norm_fn"]


def _join_or_pin(ctx: RuleContext, a: np.ndarray | None, b: np.ndarray | None,
                 why: str) -> None:
    """Join two dims that must lose the same positions; one that meets an inert dim of
    the other tensor is pinned."""
    if a is not None and b is not None:
        ctx.space.join(a, b)
    elif a is not None:
        ctx.space.pin(a, why + " (the other side is not prunable)")
    elif b is not None:
        ctx.space.pin(b, why + " (the other side is not prunable)")


def _tie_rows(ctx: RuleContext, ids: np.ndarray, groups: int) -> np.ndarray:
    """Join channel j of every group (pruning stays even across groups); row 0's ids."""
    rows = ids.reshape(groups, len(ids) // groups)
    for row in rows[1:]:
        ctx.space.join(rows[0], row)
    return rows[0]


def _param(ctx: RuleContext, node: fx.Node, value: Any) -> TensorInfo | None | bool:
    """The info of an optional tensor argument: None when absent, False when it is
    something the rule cannot follow (a tensor without channel info)."""
    if value is None:
        return None
    info = ctx.info(value)
    return info if isinstance(info, TensorInfo) else False


def _pin_except(ctx: RuleContext, info: TensorInfo, keep: tuple[int, ...], why: str) -> None:
    for d, ids in info.axes.items():
        if d not in keep:
            ctx.space.pin(ids, why)


def _conv(ctx: RuleContext, node: fx.Node, transposed: bool) -> TensorInfo | None:
    x = ctx.info(node.args[0])
    weight = _param(ctx, node, arg(node, 1, "weight"))
    bias = _param(ctx, node, arg(node, 2, "bias"))
    groups = arg(node, 6, "groups", 1)
    shape = ctx.shape(node)
    if not isinstance(x, TensorInfo) or not isinstance(weight, TensorInfo) or bias is False \
            or shape is None or x.ndim != len(shape) or weight.ndim != x.ndim \
            or not isinstance(groups, int) or groups < 1:
        return ctx.unknown(node)
    why = ctx.describe(node)
    # kernel taps and spatial positions are never channels
    _pin_except(ctx, x, (1,), why + " mixes it spatially")
    _pin_except(ctx, weight, (0, 1), why + " uses it as kernel taps")
    ins, outs = (weight.axes.get(0), weight.axes.get(1)) if transposed else \
        (weight.axes.get(1), weight.axes.get(0))
    chans = x.axes.get(1)
    if groups == 1:
        _join_or_pin(ctx, chans, ins, why)
    elif transposed:
        for ids in (chans, ins, outs):
            if ids is not None:
                ctx.space.pin(ids, why + ": grouped transposed conv")
    elif x.shape[1] == groups:  # depthwise (with multiplier): a group lives or dies whole
        outs = _depthwise(ctx, node, chans, outs, groups, why)
    else:
        if chans is not None:
            chans = _tie_rows(ctx, chans, groups)
        if outs is not None:
            _tie_rows(ctx, outs, groups)
        _join_or_pin(ctx, chans, ins, why)
    if isinstance(bias, TensorInfo):
        _join_or_pin(ctx, outs, bias.axes.get(0), why)
    return TensorInfo(tuple(shape), {1: outs} if outs is not None else {})


def _depthwise(ctx: RuleContext, node: fx.Node, chans: np.ndarray | None,
               outs: np.ndarray | None, groups: int, why: str) -> np.ndarray | None:
    """Depthwise conv: output k*mult + j reads input channel k, so they prune together
    and the ``groups`` literal follows the kept input channels."""
    if chans is None or outs is None or len(node.args) <= 6:
        # nothing to prune, or a keyword ``groups`` the supernet could not rewrite
        for ids in (chans, outs):
            if ids is not None:
                ctx.space.pin(ids, why + " (depthwise; its groups cannot follow)")
        return outs
    mult = len(outs) // groups
    for k in range(mult):
        ctx.space.join(chans, outs.reshape(groups, mult)[:, k])
    ctx.resize_arg(node, (6,), chans)
    return outs


def conv_fn(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    """``F.conv1d/2d/3d(x, weight, bias, stride, padding, dilation, groups)``: x's
    channels meet the weight's dim 1, the output's channels are the weight's dim 0 (and
    the bias); groups tie as in a grouped ``nn.Conv2d``."""
    return _conv(ctx, node, transposed=False)


def conv_transpose_fn(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    """``F.conv_transpose*``: the weight is (in, out / groups, ...); grouped ones pin."""
    return _conv(ctx, node, transposed=True)


def _per_channel(ctx: RuleContext, node: fx.Node, params: list[Any]) -> bool:
    """Whether every per-channel argument is absent or a 1-d tensor the rule can follow
    (checked before anything is joined, so that an unknown call changes nothing)."""
    for p in params:
        if p is not None and not isinstance(p, fx.Node):
            return False
        info = _param(ctx, node, p)
        if info is False or (isinstance(info, TensorInfo) and info.ndim != 1):
            return False
    return True


def _channel_stats(ctx: RuleContext, node: fx.Node, x: TensorInfo, params: list[Any]
                   ) -> np.ndarray | None:
    """Join each per-channel tensor's dim 0 with x's channel dim (x's channel ids)."""
    why = ctx.describe(node)
    chans = x.axes.get(1)
    for p in params:
        info = _param(ctx, node, p)
        if isinstance(info, TensorInfo):
            _join_or_pin(ctx, chans, info.axes.get(0), why)
    return chans


def _normalised_dims(ctx: RuleContext, x: TensorInfo, dims: range | tuple[int, ...]) -> None:
    for d in dims:
        if d in x.axes:
            ctx.normalises(x.axes[d])


def batch_norm_fn(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    """``F.batch_norm(x, running_mean, running_var, weight, bias, training, ...)``: every
    per-channel tensor follows x's dim 1. With batch statistics (training, or no running
    statistics) the other dims are normalised over: a prunable one among them (a
    standardised conv weight's input channels) is allowed and recorded."""
    x = ctx.info(node.args[0])
    if not isinstance(x, TensorInfo) or x.ndim < 2 or ctx.shape(node) != x.shape:
        return ctx.unknown(node)
    mean = arg(node, 1, "running_mean")
    training = arg(node, 5, "training", False)
    params = [mean, arg(node, 2, "running_var"), arg(node, 3, "weight"), arg(node, 4, "bias")]
    if not _per_channel(ctx, node, params):
        return ctx.unknown(node)
    _channel_stats(ctx, node, x, params)
    if training is not False or mean is None:  # a node or True: batch statistics
        _normalised_dims(ctx, x, (0, *range(2, x.ndim)))
    return x


def instance_norm_fn(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    """``F.instance_norm(x, running_mean, running_var, weight, bias, use_input_stats, ...)``:
    per-channel tensors follow x's dim 1; the spatial dims are normalised over."""
    x = ctx.info(node.args[0])
    if not isinstance(x, TensorInfo) or x.ndim < 3 or ctx.shape(node) != x.shape:
        return ctx.unknown(node)
    params = [arg(node, k, name) for k, name in
              enumerate(("running_mean", "running_var", "weight", "bias"), start=1)]
    if not _per_channel(ctx, node, params):
        return ctx.unknown(node)
    _channel_stats(ctx, node, x, params)
    _normalised_dims(ctx, x, range(2, x.ndim))
    return x


def group_norm_fn(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    """``F.group_norm(x, num_groups, weight, bias, eps)``: channel j of every group prunes
    together, so the group count stays; with one channel per group the count follows the
    kept channels instead. Groups of several channels are normalised over (recorded)."""
    x = ctx.info(node.args[0])
    groups = arg(node, 1, "num_groups")
    params = [arg(node, 2, "weight"), arg(node, 3, "bias")]
    if not isinstance(x, TensorInfo) or x.ndim < 2 or ctx.shape(node) != x.shape \
            or not isinstance(groups, int) or groups < 1 or x.shape[1] % groups \
            or not _per_channel(ctx, node, params):
        return ctx.unknown(node)
    chans = _channel_stats(ctx, node, x, params)
    if chans is not None:
        if groups == x.shape[1]:
            if len(node.args) > 1:
                ctx.resize_arg(node, (1,), chans)
            else:  # a keyword group count the supernet could not rewrite
                ctx.space.pin(chans, ctx.describe(node) + " (num_groups by keyword)")
        else:
            if groups > 1:
                _tie_rows(ctx, chans, groups)
            ctx.normalises(chans)
    _normalised_dims(ctx, x, range(2, x.ndim))
    return x


FUNCTIONAL_LAYER_RULES: dict[Any, Any] = {
    F.conv1d: conv_fn, F.conv2d: conv_fn, F.conv3d: conv_fn,
    torch.conv1d: conv_fn, torch.conv2d: conv_fn, torch.conv3d: conv_fn,
    F.conv_transpose1d: conv_transpose_fn, F.conv_transpose2d: conv_transpose_fn,
    F.conv_transpose3d: conv_transpose_fn, torch.conv_transpose1d: conv_transpose_fn,
    torch.conv_transpose2d: conv_transpose_fn, torch.conv_transpose3d: conv_transpose_fn,
    # (torch.batch_norm / torch.instance_norm take their arguments in another order)
    F.batch_norm: batch_norm_fn, F.instance_norm: instance_norm_fn,
    F.group_norm: group_norm_fn, torch.group_norm: group_norm_fn,
}

# The functional convs, whose weight's dims from 2 on are kernel taps.
CONV_FUNCTIONS = frozenset(f for f, rule in FUNCTIONAL_LAYER_RULES.items()
                           if rule in (conv_fn, conv_transpose_fn))
