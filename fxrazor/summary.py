"""A readable report of a supernet: units, pinned channels and why, params and FLOPs.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> sn = fxrazor.convert(nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)),
    ...                      torch.randn(1, 3, 4, 4))
    >>> "Pinned channels" in summary(sn)
    True
"""

from __future__ import annotations

from typing import Any

import torch
from tabulate import tabulate
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fxrazor.errors import UnsupportedModelError
from fxrazor.supernet import Supernet
from fxrazor.trace.modes import evaluating

__all__ = ["summary", "measure"]

_MAX_MEMBERS = 4


def measure(module: nn.Module, args: tuple[Any, ...]) -> tuple[int, int]:
    """(number of parameters, FLOPs of one forward on ``args``), run in eval mode so that
    no BatchNorm statistics move."""
    params = sum(p.numel() for p in module.parameters())
    counter = FlopCounterMode(display=False)
    with evaluating(module), torch.no_grad(), counter:
        module(*args)
    return params, int(counter.get_total_flops())


def _members(unit: Any) -> str:
    names = [c["name"] for c in unit.output_related + unit.input_related]
    names = list(dict.fromkeys(names))
    more = f" (+{len(names) - _MAX_MEMBERS})" if len(names) > _MAX_MEMBERS else ""
    return ", ".join(names[:_MAX_MEMBERS]) + more


def _unit_table(supernet: Supernet) -> str:
    rows = [(u.name, u.num_channels, u.activated_channels, _members(u))
            for u in supernet.units]
    if not rows:
        return "No prunable units: every channel is pinned (see below)."
    return tabulate(rows, headers=["unit", "channels", "width", "members"])


def _pinned_table(supernet: Supernet) -> str:
    analysis = supernet.analysis
    rows = []
    for group in analysis.pinned:
        slots = ", ".join(str(s) for s in group.slots[:_MAX_MEMBERS])
        if len(group.slots) > _MAX_MEMBERS:
            slots += f" (+{len(group.slots) - _MAX_MEMBERS})"
        rows.append((slots, group.num_positions, "; ".join(group.reasons)))
    small = [u for u in supernet.every_unit() if not u.is_mutable]
    for u in small:
        why = "fixed" if u.is_fixed else "a single channel cannot be pruned"
        rows.append((u.name, u.num_channels, why))
    if not rows:
        return "Pinned channels: none."
    return "Pinned channels:\n" + tabulate(rows, headers=["layers", "positions", "why"])


def summary(supernet: Supernet, flops: bool = True) -> str:
    """Tables of units (name, channels, current width, members), pinned channel groups with
    the reason, and params/FLOPs of the original model and the current subnet."""
    from fxrazor.api import freeze

    if not isinstance(supernet, Supernet):
        raise UnsupportedModelError(
            f"summary expects a Supernet from fxrazor.convert, got {type(supernet).__name__}; "
            f"convert the model first: fxrazor.summary(fxrazor.convert(model, inputs))")

    parts = [_unit_table(supernet), _pinned_table(supernet)]
    if supernet.analysis.opaque:
        parts.append("Opaque submodules:\n" + tabulate(
            sorted(supernet.analysis.opaque.items()), headers=["module", "why"]))
    if flops:
        args = supernet.example_args
        supernet.sync()
        with supernet.full_width():
            before = measure(supernet.graph_module, args)
        after = measure(freeze(supernet), args)
        rows = [("params", before[0], after[0], _ratio(after[0], before[0])),
                ("FLOPs", before[1], after[1], _ratio(after[1], before[1]))]
        parts.append(tabulate(rows, headers=["", "original", "subnet", "subnet/original"]))
    return "\n\n".join(parts)


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.3f}" if b else "-"
