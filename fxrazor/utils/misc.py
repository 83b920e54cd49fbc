"""Small helpers for channel arithmetic, search-space configs and modules.

Example:
    >>> from fxrazor.utils.misc import make_divisible, parse_values
    >>> make_divisible(30, 8)
    32
    >>> parse_values([(1, 5, 2), (8, 8, 1)])
    [[1, 3, 5], [8]]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from fxrazor.errors import InvalidArgumentError

__all__ = [
    "make_divisible",
    "parse_values",
    "add_prefix",
    "set_requires_grad",
    "get_module_device",
]

logger = logging.getLogger(__name__)


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but True/False as a channel count is always a mistake.
    return isinstance(value, int) and not isinstance(value, bool)


def make_divisible(
    value: int, divisor: int, min_value: int | None = None, min_ratio: float = 0.9
) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``.

    The result is never below ``min_value`` (``divisor`` when None). A ``min_value``
    below ``divisor`` is raised to ``divisor`` (with a log warning), as MMRazor does, so
    the result is always a positive multiple of ``divisor``. If rounding would lose more
    than ``1 - min_ratio`` of ``value``, one more ``divisor`` is added, so a layer never
    shrinks much below its requested width.

    Args:
        value: the requested number (e.g. of channels).
        divisor: the number the result must be a multiple of; must be positive.
        min_value: the smallest result allowed; defaults to ``divisor`` and is never
            taken below it.
        min_ratio: the smallest allowed ratio of the result to ``value``.

    Returns:
        The rounded number, a multiple of ``divisor``.

    Raises:
        InvalidArgumentError: if ``divisor`` is not a positive int.

    Example:
        >>> make_divisible(10, 8)
        16
        >>> make_divisible(35, 8)
        32
        >>> make_divisible(3, 8, min_value=16)
        16
        >>> make_divisible(3, 8, 1)  # min_value 1 < divisor 8 is raised to 8
        8
    """
    if not _is_int(divisor) or divisor <= 0:
        raise InvalidArgumentError(
            f"make_divisible: divisor must be a positive int, got {divisor!r}; pass e.g. divisor=8."
        )
    if min_value is None:
        min_value = divisor
    if min_value < divisor:
        # Otherwise a small value rounds to 0, the min_ratio step adds one divisor to
        # min_value, and the result (e.g. 1 + 8 = 9) is no multiple of the divisor.
        logger.debug("make_divisible: min_value %s < divisor %s; using %s",
                     min_value, divisor, divisor)
        min_value = divisor
    # int(x + d / 2) // d rounds half up to the nearest multiple.
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < min_ratio * value:
        rounded += divisor
    return int(rounded)


def _check_range(item: Any, position: int) -> tuple[int, int, int]:
    """Validate one ``(min, max, step)`` item of :func:`parse_values`."""
    where = f"parse_values: item {position} ({item!r})"
    if not isinstance(item, Sequence) or isinstance(item, str) or len(item) != 3:
        raise InvalidArgumentError(f"{where} must be a (min, max, step) triple, e.g. (16, 64, 16).")
    low, high, step = item
    if not all(_is_int(v) for v in (low, high, step)):
        raise InvalidArgumentError(f"{where} must hold three ints.")
    if step <= 0:
        raise InvalidArgumentError(f"{where} has step {step}; the step must be positive.")
    if low > high:
        raise InvalidArgumentError(f"{where} has min {low} > max {high}; swap them.")
    return low, high, step


def parse_values(candidate_lists: Iterable[Sequence[int]]) -> list[list[int]]:
    """Expand each ``(min, max, step)`` triple into its list of values.

    Each triple gives the inclusive range ``min, min + step, ...`` up to ``max``; the
    result holds one list per triple, in order (as MMRazor's ``parse_values``). This
    keeps search-space configs short.

    Args:
        candidate_lists: the triples.

    Returns:
        One list of values per triple.

    Raises:
        InvalidArgumentError: if an item is not a triple of ints with ``step > 0`` and
            ``min <= max``.

    Example:
        >>> parse_values([(16, 48, 16), (64, 64, 1)])
        [[16, 32, 48], [64]]
    """
    values: list[list[int]] = []
    for position, item in enumerate(candidate_lists):
        low, high, step = _check_range(item, position)
        values.append(list(range(low, high + 1, step)))
    return values


def add_prefix(inputs: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Return a new dict whose keys are ``f"{prefix}.{key}"``.

    Args:
        inputs: a dict with string keys.
        prefix: the prefix to put in front of every key.

    Returns:
        A new dict; ``inputs`` is not modified.

    Example:
        >>> add_prefix({"loss": 1.0, "acc": 0.5}, "student")
        {'student.loss': 1.0, 'student.acc': 0.5}
    """
    return {f"{prefix}.{key}": value for key, value in inputs.items()}


def set_requires_grad(nets: nn.Module | Sequence[nn.Module | None],
                      requires_grad: bool = False) -> None:
    """Set ``requires_grad`` of every parameter of one module or a list of modules.

    Args:
        nets: a module, or a list of modules; None entries are skipped (as in MMRazor,
            where an optional network may be absent).
        requires_grad: the value to set.

    Raises:
        InvalidArgumentError: if an item of ``nets`` is not an ``nn.Module``.

    Example:
        >>> from torch import nn
        >>> net = nn.Linear(2, 2)
        >>> set_requires_grad(net, False)
        >>> [p.requires_grad for p in net.parameters()]
        [False, False]
    """
    modules = [nets] if isinstance(nets, nn.Module) else list(nets)
    for net in modules:
        if net is None:
            continue
        if not isinstance(net, nn.Module):
            raise InvalidArgumentError(
                f"set_requires_grad: expected nn.Module items, got {type(net).__name__}."
            )
        for param in net.parameters():
            param.requires_grad = requires_grad


def get_module_device(module: nn.Module) -> torch.device:
    """Return the device a module lives on.

    The device of its parameters decides; a module without parameters is judged by its
    first buffer, and one with neither is reported as being on the CPU.

    Args:
        module: the module.

    Returns:
        The device.

    Raises:
        InvalidArgumentError: if the parameters lie on more than one device, since then
            no single device describes the module.

    Example:
        >>> from torch import nn
        >>> get_module_device(nn.Linear(2, 2))
        device(type='cpu')
        >>> get_module_device(nn.ReLU())
        device(type='cpu')
    """
    devices = {param.device for param in module.parameters()}
    if len(devices) > 1:
        names = ", ".join(sorted(str(d) for d in devices))
        raise InvalidArgumentError(
            f"get_module_device: {type(module).__name__} has parameters on several devices "
            f"({names}); move it to one device with `module.to(device)` first."
        )
    if devices:
        return devices.pop()
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")
