"""Output shapes of common layers and ops, computed instead of run on the meta device.

Running a layer on meta tensors still costs 20-600 us (its parameters must be swapped for
meta ones, and many meta kernels are Python reference implementations: element-wise ops,
``cat``, ``roll``, comparisons), against about 1 us to allocate the meta output. For the
layers and ops below the output follows from a formula. Each shortcut returns None whenever
the call is not the plain case it understands (wrong channel count, dtype mismatch, an empty
output, extra arguments, non-floating results); the op then runs on meta as usual, so an
invalid input still fails exactly where the real op would.

Example:
    >>> import torch
    >>> from torch import nn
    >>> conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    >>> conv_shape(conv, torch.empty(1, 3, 9, 9, device="meta")).shape
    torch.Size([1, 8, 5, 5])
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["layer_output", "function_output", "FUNCTION_SHAPES", "LayerShape", "conv_shape",
           "linear_shape", "pool_shape", "adaptive_pool_shape", "same_shape"]


def _meta(shape: list[int], dtype: torch.dtype) -> torch.Tensor | None:
    return torch.empty(shape, dtype=dtype, device="meta") if min(shape, default=1) > 0 else None


def conv_shape(m: nn.modules.conv._ConvNd, x: torch.Tensor) -> torch.Tensor | None:
    n = len(m.kernel_size)
    if x.dim() not in (n + 1, n + 2) or x.shape[-n - 1] != m.in_channels \
            or x.dtype != m.weight.dtype:
        return None
    if isinstance(m.padding, str):
        if m.padding != "same" and m.padding != "valid":
            return None
        padding = (0,) * n
    else:
        padding = m.padding
    sizes = list(x.shape[-n:])
    if m.padding != "same":  # 'same' keeps every spatial size (stride is 1 there)
        sizes = [(size + 2 * p - d * (k - 1) - 1) // s + 1 for size, p, d, k, s in
                 zip(sizes, padding, m.dilation, m.kernel_size, m.stride, strict=True)]
    return _meta([*x.shape[:-n - 1], m.out_channels, *sizes], x.dtype)


def linear_shape(m: nn.Linear, x: torch.Tensor) -> torch.Tensor | None:
    if x.dim() < 1 or x.shape[-1] != m.in_features or x.dtype != m.weight.dtype:
        return None
    return _meta([*x.shape[:-1], m.out_features], x.dtype)


def adaptive_pool_shape(m: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    n = int(type(m).__name__[-2])  # AdaptiveAvgPool2d → 2
    out = m.output_size if isinstance(m.output_size, (tuple, list)) else (m.output_size,) * n
    if x.dim() not in (n + 1, n + 2) or getattr(m, "return_indices", False) \
            or not x.is_floating_point() or len(out) != n:
        return None
    sizes = [s if o is None else o for s, o in zip(x.shape[-n:], out, strict=True)]
    return _meta([*x.shape[:-n], *sizes], x.dtype)


def _ints(value: Any, n: int) -> tuple[int, ...] | None:
    """An int or n ints as an n-tuple; None for anything else."""
    if type(value) is int:
        return (value,) * n
    if isinstance(value, (tuple, list)) and len(value) == n and \
            all(type(v) is int for v in value):
        return tuple(value)
    return None


def pool_shape(m: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """Max and average pooling: torch's output-size rule, ``ceil_mode`` included (a last
    window that would start in the right padding is dropped)."""
    n = int(type(m).__name__[-2])  # MaxPool2d → 2
    pool: Any = m  # the pooling attributes, which nn.Module does not declare
    if x.dim() not in (n + 1, n + 2) or getattr(pool, "return_indices", False) \
            or not x.is_floating_point():
        return None
    k, s, p = (_ints(pool.kernel_size, n), _ints(pool.stride, n), _ints(pool.padding, n))
    d = _ints(getattr(pool, "dilation", 1), n)
    if k is None or s is None or p is None or d is None or min(*s, *d) < 1 \
            or any(pi > ki // 2 for pi, ki in zip(p, k, strict=True)):
        return None  # invalid: the kernel says why
    sizes = []
    for size, ki, si, pi, di in zip(x.shape[-n:], k, s, p, d, strict=True):
        span = size + 2 * pi - di * (ki - 1) - 1
        out = (span + (si - 1 if pool.ceil_mode else 0)) // si + 1
        if pool.ceil_mode and (out - 1) * si >= size + pi:
            out -= 1
        sizes.append(out)
    return _meta([*x.shape[:-n], *sizes], x.dtype)


def same_shape(m: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """Norms, activations, dropout: the input's shape and dtype (BatchNorm on meta even
    runs a slow Python decomposition)."""
    return torch.empty(x.shape, dtype=x.dtype, device="meta") if x.is_floating_point() else None


# A layer type's output shape by formula: ``formula(module, input) -> meta tensor | None``.
# Which formula a layer type uses is part of its record (``fxrazor.layers``).
LayerShape = Callable[[Any, torch.Tensor], "torch.Tensor | None"]


def layer_output(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                 shapes: Mapping[type, LayerShape]) -> torch.Tensor | None:
    """The meta output of ``module(*args, **kwargs)`` by the formula ``shapes`` gives its
    type, or None if unknown. Only exact types are handled: a subclass may change
    ``forward``.
    """
    rule = shapes.get(type(module))
    if rule is None or kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor):
        return None
    return rule(module, args[0])


_Scalar = (int, float, bool)


def _broadcast(*shapes: torch.Size) -> list[int] | None:
    """Broadcast shape of ``shapes`` (None if they do not broadcast); 10x cheaper than
    ``torch.broadcast_shapes`` for the two operands of an element-wise op."""
    n = max(len(s) for s in shapes)
    out = [1] * n
    for shape in shapes:
        for i, size in enumerate(shape, n - len(shape)):
            if size != 1:
                if out[i] not in (1, size):
                    return None
                out[i] = size
    return out


def _pointwise(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """An element-wise op of one or two operands: the broadcast shape, the promoted dtype
    (floating results only: integer division and friends are left to the kernel)."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not tensors or len(tensors) > 2 or any(isinstance(v, torch.Tensor) for v in
                                               kwargs.values()) \
            or not all(isinstance(a, (torch.Tensor, *_Scalar)) for a in args[:2]):
        return None
    dtype = torch.result_type(args[0], args[1]) if len(args) > 1 and \
        isinstance(args[1], (torch.Tensor, *_Scalar)) else tensors[0].dtype
    if not dtype.is_floating_point:
        return None
    shape = _broadcast(*(t.shape for t in tensors))
    return None if shape is None else _meta(shape, dtype)


def _compare(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """A comparison of two operands: the broadcast shape, bool."""
    if len(args) != 2 or kwargs or not isinstance(args[0], torch.Tensor) \
            or not isinstance(args[1], (torch.Tensor, *_Scalar)):
        return None
    other = args[1].shape if isinstance(args[1], torch.Tensor) else torch.Size()
    shape = _broadcast(args[0].shape, other)
    return None if shape is None else _meta(shape, torch.bool)


def _like_first(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """Ops whose output has their first operand's shape and dtype (roll, masked_fill,
    contiguous)."""
    if not args or not isinstance(args[0], torch.Tensor):
        return None
    shape = args[0].shape
    for other in (*args[1:], *kwargs.values()):  # a mask must broadcast to the input
        if isinstance(other, torch.Tensor) and (other.dim() > len(shape) or any(
                o not in (1, s) for o, s in zip(other.shape, shape[len(shape) - other.dim():],
                                                strict=True))):
            return None
    return _meta(list(shape), args[0].dtype)


def _cat(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """``torch.cat`` of same-rank tensors."""
    tensors = args[0] if args else kwargs.get("tensors")
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    if not isinstance(tensors, (list, tuple)) or not tensors or not isinstance(dim, int) or \
            not all(isinstance(t, torch.Tensor) for t in tensors) or set(kwargs) - {"dim"}:
        return None
    rank = tensors[0].dim()
    if rank == 0 or not -rank <= dim < rank:
        return None
    dim %= rank
    rest = [t.shape[:dim] + t.shape[dim + 1:] for t in tensors]
    if any(t.dim() != rank for t in tensors) or any(r != rest[0] for r in rest):
        return None
    shape = list(tensors[0].shape)
    shape[dim] = sum(t.shape[dim] for t in tensors)
    return _meta(shape, functools.reduce(torch.promote_types, (t.dtype for t in tensors)))


def _reduce(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """``mean``/``sum``/``amax``/``amin`` of a floating tensor over given dims, with or
    without ``keepdim`` (``x.mean([2, 3])`` runs a Python reference kernel on meta, about
    100 us). Other dtypes (``sum`` of ints is int64), a ``dtype`` argument, no dims or
    repeated dims are left to the kernel."""
    if not args or not isinstance(args[0], torch.Tensor) or len(args) > 3 \
            or set(kwargs) - {"dim", "keepdim"}:
        return None
    x, dims = args[0], args[1] if len(args) > 1 else kwargs.get("dim")  # None: every dim
    keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    if isinstance(dims, int):
        dims = (dims,)
    rank = x.dim()
    if not x.dtype.is_floating_point or type(keepdim) is not bool or 0 in x.shape \
            or not isinstance(dims, (tuple, list)) or not dims \
            or not all(type(d) is int and -rank <= d < rank for d in dims):
        return None
    reduced = {d % rank for d in dims}
    if len(reduced) != len(dims):
        return None
    shape = [1 if d in reduced else s for d, s in enumerate(x.shape) if keepdim or d not in reduced]
    return _meta(shape, x.dtype)


_Shortcut = Callable[[tuple[Any, ...], dict[str, Any]], "torch.Tensor | None"]

# call_function targets and call_method names → shortcut
FUNCTION_SHAPES: dict[Any, _Shortcut] = {
    **{f: _pointwise for f in (
        operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub,
        torch.mul, torch.div, torch.relu, torch.sigmoid, torch.tanh, F.relu, F.relu6, F.gelu,
        F.silu, F.hardswish, F.hardsigmoid, F.sigmoid, F.tanh, F.leaky_relu, F.mish, F.elu,
        "add", "sub", "mul", "div", "relu", "sigmoid", "tanh")},
    **{f: _compare for f in (
        operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
        torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge,
        "eq", "ne", "lt", "le", "gt", "ge")},
    torch.roll: _like_first, "roll": _like_first, "masked_fill": _like_first,
    "contiguous": _like_first, torch.cat: _cat,
    **{f: _reduce for f in (torch.mean, torch.sum, torch.amax, torch.amin,
                            "mean", "sum", "amax", "amin")},
}


def function_output(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
                    ) -> torch.Tensor | None:
    """The meta output of a ``call_function`` target or ``call_method`` name applied to
    meta ``args``, or None when no shortcut applies.

    Example:
        >>> a = torch.empty(2, 1, 3, device="meta")
        >>> function_output(operator.lt, (a, torch.empty(4, 1, device="meta")), {}).shape
        torch.Size([2, 4, 3])
    """
    try:
        rule = FUNCTION_SHAPES.get(target)
    except TypeError:  # an unhashable target cannot have a shortcut
        return None
    return rule(args, kwargs) if rule is not None else None
