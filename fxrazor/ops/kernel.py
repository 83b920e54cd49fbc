"""Searchable kernel sizes: the centre crop of a convolution's kernel (BigNAS, OFA).

A convolution searched over kernel sizes keeps one weight of the largest size; a smaller
size ``k`` uses the centre ``k``-wide window of it, and the padding shrinks with it
(``dilation * (k - 1) / 2``), so a "same"-padded convolution stays same-padded and the
output shape does not depend on the choice. :func:`kernel_plan` checks a choice against a
layer and says how to run it; :func:`crop_kernel` cuts the weight.

Example:
    >>> from torch import nn
    >>> conv = nn.Conv2d(4, 4, 7, padding=3, groups=4)
    >>> plan = kernel_plan(conv, 3)
    >>> plan.kernel_size, plan.padding, tuple(crop_kernel(conv.weight, plan).shape)
    ((3, 3), (1, 1), (4, 1, 3, 3))
    >>> kernel_plan(conv, 4)
    Traceback (most recent call last):
    ...
    fxrazor.errors.InvalidChoiceError: kernel size 4 does not fit the conv: 7 - 4 is odd, so \
the 4-wide window has no centre in the 7-wide kernel; use sizes of the same parity as 7
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Any

import torch
from torch import nn

from fxrazor.errors import ChoiceTypeError, InvalidChoiceError

__all__ = ["KernelPlan", "kernel_plan", "crop_kernel", "normalise_kernel"]


@dataclass(frozen=True)
class KernelPlan:
    """How a convolution runs at one kernel size.

    Attributes:
        kernel_size: the kernel size used, one entry per spatial dim.
        padding: the padding that keeps the output shape (a tuple, or ``"same"`` where
            the layer says so).
        reversed_padding: the padding as ``F.pad`` takes it (last dim first, both sides),
            for padding modes other than zeros.
        starts: where the window starts in each spatial dim of the full kernel.
        full: the window is the whole kernel (nothing to crop).
    """

    kernel_size: tuple[int, ...]
    padding: tuple[int, ...] | str
    reversed_padding: tuple[int, ...]
    starts: tuple[int, ...]
    full: bool


def normalise_kernel(choice: Any, dims: int) -> tuple[int, ...]:
    """A kernel-size choice as a tuple of ``dims`` ints (an int means a square kernel).

    Example:
        >>> normalise_kernel(5, 2), normalise_kernel([3, 5], 2)
        ((5, 5), (3, 5))
    """
    values = list(choice) if isinstance(choice, (tuple, list)) else [choice] * dims
    if len(values) != dims or any(isinstance(v, bool) or not isinstance(v, Integral)
                                  for v in values):
        raise ChoiceTypeError(
            f"a kernel size must be an int or {dims} ints (one per spatial dim), "
            f"got {choice!r}")
    return tuple(int(v) for v in values)


def _reversed(padding: tuple[int, ...] | str, kernel: tuple[int, ...],
              dilation: tuple[int, ...]) -> tuple[int, ...]:
    """The padding in ``F.pad``'s order, as ``nn.Conv*`` computes it for itself."""
    out: list[int] = []
    for i in reversed(range(len(kernel))):
        if isinstance(padding, str):  # "same": the odd pixel goes to the end, as torch does
            total = dilation[i] * (kernel[i] - 1)
            out += [total // 2, total - total // 2]
        else:
            out += [padding[i], padding[i]]
    return tuple(out)


def kernel_plan(conv: nn.modules.conv._ConvNd, choice: Any) -> KernelPlan:
    """Check kernel size ``choice`` against ``conv`` and say how to run it.

    Raises:
        ChoiceTypeError: ``choice`` is not an int or a tuple of ints.
        InvalidChoiceError: the size is larger than the layer's kernel, has no centre
            window in it (the difference is odd), or needs a padding the layer cannot keep
            (the layer is not same-padded, or ``dilation * (k - 1)`` is odd).
    """
    full = tuple(conv.kernel_size)
    dilation = tuple(conv.dilation)
    kernel = normalise_kernel(choice, len(full))
    shown = choice if isinstance(choice, int) else kernel
    where = f"kernel size {shown!r} does not fit the conv"
    for k, big in zip(kernel, full, strict=True):
        if not 1 <= k <= big:
            raise InvalidChoiceError(
                f"{where}: its kernel is {full}, and a searched size must lie between 1 and "
                f"it; make the layer's kernel the largest size searched")
        if (big - k) % 2:
            raise InvalidChoiceError(
                f"{where}: {big} - {k} is odd, so the {k}-wide window has no centre in the "
                f"{big}-wide kernel; use sizes of the same parity as {big}")
    starts = tuple((big - k) // 2 for k, big in zip(kernel, full, strict=True))
    if kernel == full:  # the layer as it is, whatever its padding
        return KernelPlan(kernel, conv.padding, tuple(conv._reversed_padding_repeated_twice),
                          starts, True)
    padding: tuple[int, ...] | str
    if isinstance(conv.padding, str):
        if conv.padding != "same":
            raise InvalidChoiceError(
                f"{where}: the conv has padding={conv.padding!r}, so a smaller kernel would "
                f"change its output size; only same-padded convs can search kernel sizes")
        padding = "same"
    else:
        same = [d * (big - 1) for d, big in zip(dilation, full, strict=True)]
        if [2 * p for p in conv.padding] != same:
            raise InvalidChoiceError(
                f"{where}: the conv is not same-padded (padding {tuple(conv.padding)}, "
                f"dilation {dilation}, kernel {full}: same padding is dilation*(kernel-1)/2"
                f" = {tuple(s / 2 for s in same)}), so a smaller kernel would change its "
                f"output size; give the layer same padding")
        doubled = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
        if any(n % 2 for n in doubled):
            raise InvalidChoiceError(
                f"{where}: the padding that keeps the output size would be "
                f"dilation*(k-1)/2 = {tuple(n / 2 for n in doubled)}, not whole; use odd "
                f"kernel sizes")
        padding = tuple(n // 2 for n in doubled)
    return KernelPlan(kernel, padding, _reversed(padding, kernel, dilation), starts, False)


def crop_kernel(weight: torch.Tensor, plan: KernelPlan) -> torch.Tensor:
    """The centre window of ``weight``'s spatial dims (its last ones) that ``plan`` keeps;
    a view, not a copy."""
    if plan.full:
        return weight
    first = weight.dim() - len(plan.kernel_size)
    for i, (start, k) in enumerate(zip(plan.starts, plan.kernel_size, strict=True)):
        weight = weight.narrow(first + i, start, k)
    return weight
