"""Output shapes of common layers, computed instead of run on the meta device.

Running a layer on meta tensors still costs 20-250 us (its parameters must be swapped for
meta ones, and some meta kernels are Python reference implementations), against about 1 us
to allocate the meta output. For the layers below the shape follows from a formula. Each
function returns None whenever the call is not the plain case it understands (wrong
channel count, dtype mismatch, an empty output, extra arguments); the layer then runs on
meta as usual, so an invalid input still fails exactly where the real layer would.

Example:
    >>> import torch
    >>> from torch import nn
    >>> conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    >>> layer_output(conv, (torch.empty(1, 3, 9, 9, device="meta"),), {}).shape
    torch.Size([1, 8, 5, 5])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["layer_output", "LAYER_SHAPES"]


def _meta(shape: list[int], dtype: torch.dtype) -> torch.Tensor | None:
    return torch.empty(shape, dtype=dtype, device="meta") if min(shape, default=1) > 0 else None


def _conv(m: nn.modules.conv._ConvNd, x: torch.Tensor) -> torch.Tensor | None:
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


def _linear(m: nn.Linear, x: torch.Tensor) -> torch.Tensor | None:
    if x.dim() < 1 or x.shape[-1] != m.in_features or x.dtype != m.weight.dtype:
        return None
    return _meta([*x.shape[:-1], m.out_features], x.dtype)


def _adaptive_pool(m: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    n = int(type(m).__name__[-2])  # AdaptiveAvgPool2d → 2
    out = m.output_size if isinstance(m.output_size, (tuple, list)) else (m.output_size,) * n
    if x.dim() not in (n + 1, n + 2) or getattr(m, "return_indices", False) \
            or not x.is_floating_point() or len(out) != n:
        return None
    sizes = [s if o is None else o for s, o in zip(x.shape[-n:], out, strict=True)]
    return _meta([*x.shape[:-n], *sizes], x.dtype)


LAYER_SHAPES: dict[type[nn.Module], Callable[[Any, torch.Tensor], torch.Tensor | None]] = {
    nn.Conv1d: _conv, nn.Conv2d: _conv, nn.Conv3d: _conv, nn.Linear: _linear,
    nn.AdaptiveAvgPool1d: _adaptive_pool, nn.AdaptiveAvgPool2d: _adaptive_pool,
    nn.AdaptiveAvgPool3d: _adaptive_pool, nn.AdaptiveMaxPool1d: _adaptive_pool,
    nn.AdaptiveMaxPool2d: _adaptive_pool, nn.AdaptiveMaxPool3d: _adaptive_pool,
}


def layer_output(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
                 ) -> torch.Tensor | None:
    """The meta output of ``module(*args, **kwargs)`` by formula, or None if unknown.

    Only exact types are handled: a subclass may change ``forward``.
    """
    rule = LAYER_SHAPES.get(type(module))
    if rule is None or kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor):
        return None
    return rule(module, args[0])
