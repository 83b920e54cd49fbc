"""Channel rules for routing: tensors whose *values* are positions of a channel dim.

A mixture-of-experts layer scores the experts with a router (a linear layer whose output
dim is the experts), keeps each token's top-k experts (``torch.topk`` along that dim),
sorts the tokens by expert, counts them per expert (``histc``) and runs a grouped matmul
over the experts' stacked weights with the running counts as offsets. Dropping whole
experts means dropping router rows, expert weights and count bins together, while the
expert *ids* in between become ids among the kept experts. No dim of the id tensors is a
channel dim: their values are.

So ``topk`` along a prunable dim gives an index tensor that *refers to* the dim's elements
(``RuleContext.indices``). The ops in :data:`INDEX_PASS` carry such values unchanged
(reshapes, dtype casts, sort, taking items); :func:`expert_counts` turns them back into a
channel dim (one bin per element, its size following the kept count), whose running sum
(``torch.cumsum``) gives the offsets of the grouped matmul. Any other op that
reads an index tensor pins the elements it refers to (the walk does that), since it may
compare the ids with constants or use them in ways no rule describes.

Pruning along a softmax-then-topk or a cumulative sum changes the kept values (the softmax
is over the kept experts, as if the dropped ones scored minus infinity), so those elements
are recorded as normalised: zeroing them is not the same as removing them. A top-k over a
dim needs at least k kept elements: the unit gets that minimum
(``RuleContext.minimums``).

Example:
    >>> import torch
    >>> sorted(ROUTING_RULES, key=str)[:2] == sorted([torch.cumsum, torch.softmax], key=str)
    True
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx

from fxrazor.analysis.context import RuleContext
from fxrazor.analysis.elements import TensorInfo
from fxrazor.rules.args import arg
from fxrazor.trace.routing import expert_counts

__all__ = ["ROUTING_RULES", "ROUTING_METHOD_RULES", "INDEX_PASS", "INDEX_CONSUMERS", "topk", "sort", "cumsum",
           "counts", "router_softmax"]

# ops whose output holds the same ids as their input (any shape, any dtype)
_PASS_FUNCTIONS = (torch.reshape, torch.flatten, torch.clone, torch.squeeze, torch.unsqueeze,
                   torch.sort, operator.getitem)
_PASS_METHODS = ("view", "reshape", "flatten", "to", "contiguous", "clone", "float", "long",
                 "int", "detach", "squeeze", "unsqueeze")


def _others(info: TensorInfo, dim: int, shape: tuple[int, ...]) -> TensorInfo:
    return TensorInfo(shape, {d: a for d, a in info.axes.items() if d != dim})


def _dim(info: TensorInfo, dim: Any) -> int | None:
    return dim % info.ndim if isinstance(dim, int) and info.ndim else None


def topk(ctx: RuleContext, node: fx.Node) -> Any:
    """``torch.topk(x, k, dim)``: the other dims pass to values and indices; along a
    prunable dim the values are inert (k of the kept), and the indices refer to the dim's
    elements, which must keep at least k."""
    info, k = ctx.info(node.args[0]), arg(node, 1, "k")
    dim = _dim(info, arg(node, 2, "dim", -1)) if isinstance(info, TensorInfo) else None
    meta = node.meta.get("tensor_meta")
    if dim is None or not isinstance(k, int) or not isinstance(meta, (tuple, list)):
        return ctx.unknown(node)
    shape = tuple(int(s) for s in meta[0].shape)
    out = _others(info, dim, shape)
    ids = info.axes.get(dim)
    if ids is not None:
        ctx.normalises(ids)  # the top k of the kept: not those of a zeroed tensor
        ctx.minimums.append((ids, k, f"{ctx.describe(node)} picks {k} of them"))
        ctx.indices[node] = (None, ids)
    return (out, out)


def sort(ctx: RuleContext, node: fx.Node) -> Any:
    """``torch.sort(x, dim)``: values move along ``dim`` (pinned there); the rest pass."""
    info = ctx.info(node.args[0])
    dim = _dim(info, arg(node, 1, "dim", -1)) if isinstance(info, TensorInfo) else None
    if dim is None:
        return ctx.unknown(node)
    if dim in info.axes:
        ctx.space.pin(info.axes[dim], f"{ctx.describe(node)} reorders values along it")
    out = _others(info, dim, info.shape)
    return (out, out)


def cumsum(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    """``torch.cumsum`` of :func:`expert_counts` along its bins: running token counts per
    kept expert (a grouped matmul's offsets), normalised. Any other cumulative sum mixes
    channels in a way no unit describes: unknown (pinned)."""
    source = node.args[0]
    info = ctx.info(source)
    dim = _dim(info, arg(node, 1, "dim")) if isinstance(info, TensorInfo) else None
    if dim is None or not isinstance(source, fx.Node) or source.target is not expert_counts:
        return ctx.unknown(node)
    if dim in info.axes:
        ctx.normalises(info.axes[dim])
    return info


def counts(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    """:func:`expert_counts` of ids that refer to a dim of n elements, n bins: one bin per
    element, so the bins are that dim's elements and their number follows the kept count."""
    refers = ctx.indices.get(node.args[0]) if isinstance(node.args[0], fx.Node) else None
    bins = node.args[1] if len(node.args) > 1 else None
    shape = ctx.shape(node)
    if not isinstance(refers, np.ndarray) or bins != len(refers) or shape is None:
        if isinstance(refers, np.ndarray):
            ctx.space.pin(refers, f"{ctx.describe(node)} counts them in {bins} bins")
        return ctx.unknown(node)
    ctx.resize_arg(node, (1,), refers)
    return TensorInfo(shape, {0: refers})


def router_softmax(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    """softmax along a prunable dim whose every user keeps its top k along it (a router):
    the softmax over the kept elements is the full one with the dropped ones at minus
    infinity, so the dim stays prunable (normalised). Along any other softmax the
    elements interact and are pinned."""
    info = ctx.info(node.args[0])
    dim = _dim(info, arg(node, 1, "dim")) if isinstance(info, TensorInfo) else None
    if dim is None:
        return ctx.unknown(node)
    ids = info.axes.get(dim)
    if ids is not None:
        if node.users and all(_topk_along(u, dim, info.ndim) for u in node.users):
            ctx.normalises(ids)
            return info
        ctx.space.pin(ids, f"{ctx.describe(node)} mixes values along it")
    out = _others(info, dim, info.shape)
    return TensorInfo(out.shape, out.axes,
                      why={**info.why, dim: f"{ctx.describe(node)} mixes values along it"})


def _topk_along(user: fx.Node, dim: int, ndim: int) -> bool:
    if not ((user.op == "call_function" and user.target is torch.topk)
            or (user.op == "call_method" and user.target == "topk")):
        return False
    d = arg(user, 2, "dim", -1)
    return isinstance(d, int) and d % ndim == dim


ROUTING_RULES: dict[Any, Any] = {
    torch.topk: topk, torch.sort: sort, torch.cumsum: cumsum, expert_counts: counts,
    torch.softmax: router_softmax, F.softmax: router_softmax,
}
ROUTING_METHOD_RULES: dict[str, Any] = {"topk": topk, "sort": sort, "cumsum": cumsum,
                                        "softmax": router_softmax}


def _pass(ctx: RuleContext, node: fx.Node, refers: Any) -> Any:
    """The ids of an op that keeps its input's values: one array, or the item taken."""
    if isinstance(refers, tuple):  # a tuple-valued node (topk, sort): getitem takes one
        index = node.args[1] if len(node.args) > 1 else None
        if node.target is operator.getitem and isinstance(index, int):
            return refers[index]
        return None  # (the walk pins what no output carries)
    if node.target is torch.sort:
        return (refers, None)  # sorted ids are ids; the permutation is not
    return refers


# Ops that carry the ids of their first argument to their output (see _pass).
INDEX_PASS: dict[Any, Any] = {**{f: _pass for f in _PASS_FUNCTIONS},
                              **{m: _pass for m in _PASS_METHODS}}
# Ops whose channel rule reads the ids itself.
INDEX_CONSUMERS = frozenset({expert_counts})
