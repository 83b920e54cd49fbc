"""Graph-level dynamic pieces: parameters used directly in the graph, and size literals.

Example:
    >>> import torch
    >>> p = DynamicParam(torch.nn.Parameter(torch.arange(6.).view(3, 2)))
    >>> p.set_selection("dim0", torch.tensor([0, 2]))
    >>> p().tolist()
    [[0.0, 1.0], [4.0, 5.0]]
"""

from __future__ import annotations

import torch
from torch import nn

from fxrazor.analysis.result import param_role
from fxrazor.ops.base import Selection, take

__all__ = ["DynamicParam", "SizeCounter"]


class DynamicParam(nn.Module):
    """Returns a parameter (or buffer) sliced along each of its prunable dims.

    Args:
        value: the parameter or buffer.
        target: its qualified name in the model (the frozen model uses it again).
    """

    def __init__(self, value: torch.Tensor, target: str = "") -> None:
        super().__init__()
        self.target = target
        if isinstance(value, nn.Parameter):
            self.value = value
        else:
            self.register_buffer("value", value)
        # by role, in dim order (forward enumerates them)
        self._fxr_sel: dict[str, Selection] = {param_role(d): None for d in range(value.dim())}

    def set_selection(self, role: str, sel: Selection) -> None:
        self._fxr_sel[role] = sel

    def selection(self, role: str) -> Selection:
        return self._fxr_sel[role]

    def forward(self) -> torch.Tensor:
        out: torch.Tensor = self.value
        for dim, sel in enumerate(self._fxr_sel.values()):
            out = take(out, dim, sel)
        return out

    def to_static(self) -> torch.Tensor:
        """The sliced value as a new contiguous parameter (or buffer tensor)."""
        data = self.forward().detach().clone().contiguous()
        if isinstance(self.value, nn.Parameter):
            return nn.Parameter(data, self.value.requires_grad)
        return data


class SizeCounter(nn.Module):
    """Returns an int: the current width of a pruned dimension (for view/split sizes)."""

    def __init__(self, full: int) -> None:
        super().__init__()
        self.full = full
        self.value = full

    def forward(self) -> int:
        return self.value

    def extra_repr(self) -> str:
        return f"full={self.full}, value={self.value}"
