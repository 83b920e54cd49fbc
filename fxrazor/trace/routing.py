"""Runtime helpers that routed graphs (mixture-of-experts) call once pruned.

A mixture-of-experts layer counts the tokens routed to each expert with
``torch.histc(expert_ids, bins=E, min=0, max=E - 1)``. Both ``E`` and ``E - 1`` follow the
number of experts, so when whole experts are pruned the call is written as
:func:`expert_counts` with one size argument, which the supernet keeps equal to the number
of experts it keeps (a frozen model has it as a constant).

Example:
    >>> import torch
    >>> expert_counts(torch.tensor([0., 2., 2., 1.]), 3).tolist()
    [1.0, 1.0, 2.0]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["expert_counts", "leaf_functions"]


def expert_counts(expert_ids: torch.Tensor, num_experts: int) -> torch.Tensor:
    """``torch.histc(expert_ids, bins=num_experts, min=0, max=num_experts - 1)``: for ids
    in ``[0, num_experts)``, how many entries name each expert (floats, as histc gives)."""
    return torch.histc(expert_ids, bins=num_experts, min=0, max=num_experts - 1)


def leaf_functions() -> tuple[Callable[..., Any], ...]:
    """Functions that fxrazor's tracer records as one call instead of tracing them: the
    routing helpers (their rules resize them), and those that timm registers as not
    traceable (``register_notrace_function``: ``int()`` of a size, say), as timm's own
    feature extractor does, where timm is imported. A recorded function without a rule
    pins the channels it touches."""
    timm_fx = sys.modules.get("timm.layers._fx")
    notrace = getattr(timm_fx, "get_notrace_functions", None)
    timm_functions = [f for f in notrace() if callable(f)] if notrace is not None else []
    return (expert_counts, *timm_functions)


# symbolic tracing records it as one call (``routing.expert_counts(...)``; fxrazor's tracer
# also where it is imported by name), so that its size argument can follow the experts
torch.fx.wrap("expert_counts")
