"""ATen calls of torch.export's training IR, written back as the torch calls they stand for.

The export front-end (:mod:`fxrazor.trace.export_capture`) captures a model as ATen calls;
the channel rules, the dynamic ops and ``freeze`` speak torch-level calls (``torch.cat``,
``x.view(...)``, ``F.scaled_dot_product_attention``). Where an ATen overload means exactly
a torch call with its arguments rearranged, it is written as that call, so the one set of
rules serves both front-ends and a frozen graph reads like the model's own code. Every
other ATen call stays as it is: the analysis has no rule for it and pins its channels,
naming it (never treated as element-wise).

Example:
    >>> import torch
    >>> op, target, args, kwargs = to_torch_call(torch.ops.aten.slice.Tensor, ("x", 1, 0, 8), {})
    >>> op, target.__name__, args
    ('call_function', 'getitem', ('x', (slice(None, None, None), slice(None, 8, None))))
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from fxrazor.trace.routing import expert_counts

__all__ = ["to_torch_call", "DROPPED_ATEN_OPS", "TORCH_EQUIVALENTS"]

aten = torch.ops.aten
_INT64_MAX = 2**63 - 1

# (op, target, args, kwargs) of an fx node
Call = tuple[str, Any, tuple[Any, ...], dict[str, Any]]
Adapter = Callable[[tuple[Any, ...], dict[str, Any]], Call]

# Calls that only check metadata the graph already carries: they compute nothing.
DROPPED_ATEN_OPS = frozenset({
    aten._assert_tensor_metadata.default, aten._assert_scalar.default,
    aten.sym_constrain_range_for_size.default,
})


def _function(target: Any) -> Adapter:
    return lambda args, kwargs: ("call_function", target, args, kwargs)


def _method(name: str) -> Adapter:
    return lambda args, kwargs: ("call_method", name, args, kwargs)


def _slice(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    x, dim, start, end, step = (*args, *([None] * (5 - len(args))))[:5]
    dim = 0 if dim is None else dim
    start = kwargs.get("start", start)
    end = kwargs.get("end", end)
    step = kwargs.get("step", step)
    start = None if start in (0, None) else start
    end = None if end is None or (isinstance(end, int) and end >= _INT64_MAX) else end
    step = None if step in (1, None) else step
    if start is None and end is None and step is None:
        return ("identity", None, (x,), {})  # the whole dim: export writes ``x[:]`` so
    return _index(x, dim, slice(start, end, step))


def _index_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    x, indices = args
    if len(indices) == 1 and indices[0] is not None:  # x[idx]: rows gathered along dim 0
        return ("call_function", operator.getitem, (x, indices[0]), {})
    return ("call_function", aten.index.Tensor, tuple(args), dict(kwargs))


def _select(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    x, dim, index = args
    return _index(x, dim, index)


def _index(x: Any, dim: int, item: Any) -> Call:
    # a negative dim counts from the end: ``x[..., item]`` keeps it without knowing the rank
    if dim < 0:
        key: tuple[Any, ...] = (Ellipsis, item, *([slice(None)] * (-dim - 1)))
    else:
        key = (*([slice(None)] * dim), item)
    return ("call_function", operator.getitem, (x, key), {})


def _layer_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    return ("call_function", F.layer_norm, tuple(args[:5]), {})  # drops cudnn_enable


def _embedding(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    weight, indices, padding_idx = (*args, -1)[:3]
    pad = None if padding_idx == -1 else padding_idx
    return ("call_function", F.embedding, (indices, weight), {"padding_idx": pad})


def _softmax(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    x, dim = args[:2]
    dtype = args[2] if len(args) > 2 else kwargs.get("dtype")
    return ("call_function", torch.softmax, (x, dim), {"dtype": dtype} if dtype else {})


def _softmax_internal(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    x, dim, half_to_float = args[:3]
    if half_to_float:  # a float16 input with a float32 result: no plain torch call says so
        return ("call_function", aten._softmax.default, args, kwargs)
    return ("call_function", torch.softmax, (x, dim), {})


def _to(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    return ("call_method", "to", args, {k: v for k, v in kwargs.items()
                                        if k in ("dtype", "device", "non_blocking", "copy")})


def _mean(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    return ("call_function", torch.mean, args, kwargs)


def _dropout(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    x, p, train = (*args, kwargs.get("p", 0.5), kwargs.get("train", True))[:3]
    return ("call_function", F.dropout, (x, p, train), {})


def _constant_pad(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    x, pad, value = (*args, kwargs.get("value", 0))[:3]
    return ("call_function", F.pad, (x, pad, "constant", value), {})


def _sym_size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    return ("call_method", "size", args, {})


def _interpolate(mode: str, antialias: bool = False) -> Adapter:
    """``aten.upsample_<mode>.vec(input, output_size, [align_corners,] scale_factors)`` as
    ``F.interpolate`` (scriptable, and it has a channel rule)."""
    def adapt(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
        values = list(args) + [None] * 4
        if mode == "nearest":
            size, align, scales = values[1], None, values[2]
        else:
            size, align, scales = values[1], values[2], values[3]
        options = {"size": size, "scale_factor": scales, "mode": mode,
                   "align_corners": align, "antialias": antialias}
        return ("call_function", F.interpolate, args[:1], options)
    return adapt


def _topk(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    x, k, dim, largest, ordered = (*args, *[None] * 5)[:5]
    return ("call_function", torch.topk, (x, k), {
        "dim": kwargs.get("dim", -1 if dim is None else dim),
        "largest": kwargs.get("largest", True if largest is None else largest),
        "sorted": kwargs.get("sorted", True if ordered is None else ordered)})


def _sort(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    x, dim, descending = (*args, *[None] * 3)[:3]
    options = {"dim": kwargs.get("dim", -1 if dim is None else dim),
               "descending": kwargs.get("descending", bool(descending))}
    if kwargs.get("stable") is not None:
        options["stable"] = kwargs["stable"]
    return ("call_function", torch.sort, (x,), options)


def _histc(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    """Counts per id (``bins=n, min=0, max=n - 1``, a router's tokens per expert) become
    :func:`~fxrazor.trace.routing.expert_counts`, whose one size can follow pruned experts."""
    x, bins, low, high = (*args, *[None] * 4)[:4]
    bins, low, high = (kwargs.get("bins", 100 if bins is None else bins),
                       kwargs.get("min", 0 if low is None else low),
                       kwargs.get("max", 0 if high is None else high))
    if isinstance(bins, int) and low == 0 and high == bins - 1:
        return ("call_function", expert_counts, (x, bins), {})
    return ("call_function", torch.histc, (x,), {"bins": bins, "min": low, "max": high})


def _cumsum(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    return ("call_function", torch.cumsum, tuple(args[:2]),
            {"dtype": kwargs["dtype"]} if kwargs.get("dtype") is not None else {})


TORCH_EQUIVALENTS: dict[Any, Adapter] = {
    # arithmetic and element-wise (same arguments, same broadcasting)
    aten.add.Tensor: _function(torch.add), aten.add.Scalar: _function(torch.add),
    aten.sub.Tensor: _function(torch.sub), aten.sub.Scalar: _function(torch.sub),
    aten.rsub.Scalar: _method("__rsub__"),
    aten.mul.Tensor: _function(torch.mul), aten.mul.Scalar: _function(torch.mul),
    aten.div.Tensor: _function(torch.div), aten.div.Scalar: _function(torch.div),
    aten.div.Tensor_mode: _function(torch.div),
    aten.pow.Tensor_Scalar: _function(torch.pow), aten.pow.Tensor_Tensor: _function(torch.pow),
    aten.neg.default: _function(torch.neg), aten.abs.default: _function(torch.abs),
    aten.exp.default: _function(torch.exp), aten.log.default: _function(torch.log),
    aten.sqrt.default: _function(torch.sqrt), aten.rsqrt.default: _function(torch.rsqrt),
    aten.sin.default: _function(torch.sin), aten.cos.default: _function(torch.cos),
    aten.erf.default: _function(torch.erf), aten.reciprocal.default: _function(torch.reciprocal),
    aten.sigmoid.default: _function(torch.sigmoid), aten.tanh.default: _function(torch.tanh),
    aten.relu.default: _function(torch.relu), aten.relu_.default: _function(F.relu_),
    aten.silu.default: _function(F.silu), aten.gelu.default: _function(F.gelu),
    aten.hardtanh.default: _function(F.hardtanh), aten.hardswish.default: _function(F.hardswish),
    aten.hardsigmoid.default: _function(F.hardsigmoid), aten.mish.default: _function(F.mish),
    aten.elu.default: _function(F.elu), aten.leaky_relu.default: _function(F.leaky_relu),
    aten.softplus.default: _function(F.softplus),
    aten.clamp.default: _function(torch.clamp), aten.clamp_min.default: _method("clamp_min"),
    aten.clamp_max.default: _method("clamp_max"),
    aten.where.self: _function(torch.where), aten.where.ScalarOther: _function(torch.where),
    aten.where.ScalarSelf: _function(torch.where), aten.maximum.default: _function(torch.maximum),
    aten.minimum.default: _function(torch.minimum),
    aten.masked_fill.Scalar: _method("masked_fill"), aten.masked_fill.Tensor: _method("masked_fill"),
    aten.eq.Tensor: _function(torch.eq), aten.eq.Scalar: _function(torch.eq),
    aten.ne.Tensor: _function(torch.ne), aten.ne.Scalar: _function(torch.ne),
    aten.lt.Tensor: _function(torch.lt), aten.lt.Scalar: _function(torch.lt),
    aten.le.Tensor: _function(torch.le), aten.le.Scalar: _function(torch.le),
    aten.gt.Tensor: _function(torch.gt), aten.gt.Scalar: _function(torch.gt),
    aten.ge.Tensor: _function(torch.ge), aten.ge.Scalar: _function(torch.ge),
    aten.dropout.default: _dropout, aten.clone.default: _method("clone"),
    aten.contiguous.default: _method("contiguous"), aten.detach.default: _method("detach"),
    aten.upsample_nearest1d.vec: _interpolate("nearest"),
    aten.upsample_nearest2d.vec: _interpolate("nearest"),
    aten.upsample_nearest3d.vec: _interpolate("nearest"),
    aten.upsample_linear1d.vec: _interpolate("linear"),
    aten.upsample_bilinear2d.vec: _interpolate("bilinear"),
    aten.upsample_trilinear3d.vec: _interpolate("trilinear"),
    aten.upsample_bicubic2d.vec: _interpolate("bicubic"),
    aten._upsample_bilinear2d_aa.vec: _interpolate("bilinear", antialias=True),
    aten._upsample_bicubic2d_aa.vec: _interpolate("bicubic", antialias=True),
    aten.unbind.int: _function(torch.unbind),  # scriptable (an overload is not)
    aten.alias.default: lambda args, kwargs: ("identity", None, args[:1], {}),
    aten.to.dtype: _to, aten.to.device: _to, aten.to.dtype_layout: _to,
    aten.type_as.default: _method("type_as"),
    aten.zeros_like.default: _function(torch.zeros_like),
    aten.ones_like.default: _function(torch.ones_like),
    # shapes
    aten.view.default: _method("view"), aten.reshape.default: _function(torch.reshape),
    aten._unsafe_view.default: _function(torch.reshape),
    aten.permute.default: _function(torch.permute), aten.transpose.int: _function(torch.transpose),
    aten.t.default: _function(torch.t), aten.unsqueeze.default: _function(torch.unsqueeze),
    aten.squeeze.dim: _function(torch.squeeze), aten.squeeze.dims: _function(torch.squeeze),
    aten.squeeze.default: _function(torch.squeeze),
    aten.flatten.using_ints: _function(torch.flatten),
    aten.unflatten.int: _function(torch.unflatten),
    aten.expand.default: _method("expand"), aten.expand_as.default: _method("expand_as"),
    aten.repeat.default: _method("repeat"),
    aten.slice.Tensor: _slice, aten.select.int: _select, aten.index.Tensor: _index_tensor,
    aten.narrow.default: _function(torch.narrow),
    aten.cat.default: _function(torch.cat), aten.stack.default: _function(torch.stack),
    aten.split.Tensor: _function(torch.split),
    aten.split_with_sizes.default: _function(torch.split),
    aten.chunk.default: _function(torch.chunk), aten.roll.default: _function(torch.roll),
    aten.sym_size.int: _sym_size,
    # reductions and normalisation over a dim
    aten.mean.dim: _mean, aten.mean.default: _mean, aten.sum.dim_IntList: _function(torch.sum),
    aten.sum.default: _function(torch.sum), aten.amax.default: _function(torch.amax),
    aten.softmax.int: _softmax, aten._softmax.default: _softmax_internal,
    aten.log_softmax.int: _function(torch.log_softmax),
    # routing (mixture of experts): top-k experts, tokens sorted and counted per expert
    aten.topk.default: _topk, aten.sort.default: _sort, aten.sort.stable: _sort,
    aten.histc.default: _histc, aten.cumsum.default: _cumsum,
    # contractions and layers written functionally
    aten.matmul.default: _function(torch.matmul), aten.bmm.default: _function(torch.bmm),
    aten.mm.default: _function(torch.matmul), aten.addmm.default: _function(torch.addmm), aten.einsum.default: _function(torch.einsum),
    aten.linear.default: _function(F.linear), aten.layer_norm.default: _layer_norm,
    aten.embedding.default: _embedding,
    aten.scaled_dot_product_attention.default: _function(F.scaled_dot_product_attention),
    aten.conv1d.default: _function(F.conv1d), aten.conv2d.default: _function(F.conv2d),
    aten.conv3d.default: _function(F.conv3d),
    aten.adaptive_avg_pool1d.default: _function(F.adaptive_avg_pool1d),
    aten.adaptive_avg_pool2d.default: _function(F.adaptive_avg_pool2d),
    aten.avg_pool2d.default: _function(F.avg_pool2d),
    aten.max_pool2d.default: _function(F.max_pool2d),
    aten.pad.default: _function(F.pad), aten.constant_pad_nd.default: _constant_pad,
    aten.arange.default: _function(torch.arange), aten.arange.start: _function(torch.arange),
    aten.arange.start_step: _function(torch.arange),
}


def to_torch_call(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    """The torch-level call an ATen call stands for, or the ATen call itself.

    Args:
        target: the ATen overload (``torch.ops.aten.view.default``).
        args, kwargs: its arguments as in the exported graph.

    Returns:
        ``(op, target, args, kwargs)`` of the fx node to build; op ``"identity"`` means
        no node: the call's value is ``args[0]``.
    """
    adapter = TORCH_EQUIVALENTS.get(target)
    if adapter is None:
        return ("call_function", target, tuple(args), dict(kwargs))
    return adapter(tuple(args), dict(kwargs))
