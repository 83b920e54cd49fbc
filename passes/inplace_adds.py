"""Restore in-place residual adds in a frozen graph.

Tracing records ``out += identity`` as an out-of-place ``add``, which allocates a new tensor
per residual block. When the left operand is a BatchNorm or convolution output used by
nothing else and both operands have the same shape, adding in place is equivalent and safe
for autograd (neither layer saves its output for the backward pass).

Example:
    >>> import torch
    >>> from torch import fx, nn
    >>> class Block(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.bn = nn.BatchNorm2d(2)
    ...     def forward(self, x):
    ...         return self.bn(x) + x
    >>> gm = fx.symbolic_trace(Block().eval())
    >>> from torch.fx.passes.shape_prop import ShapeProp
    >>> _ = ShapeProp(gm).propagate(torch.randn(1, 2, 3, 3))
    >>> restore_inplace_adds(gm, (nn.BatchNorm2d,))
    1
    >>> [n.target for n in gm.graph.nodes if n.op == "call_method"]
    ['add_']
"""

from __future__ import annotations

import operator
from typing import Any, cast

import torch
from torch import fx

__all__ = ["restore_inplace_adds"]


def _shape(node: object) -> tuple | None:
    meta: Any = getattr(node, "meta", {}).get("tensor_meta")
    return tuple(meta.shape) if hasattr(meta, "shape") else None


def restore_inplace_adds(gm: fx.GraphModule, safe_producers: tuple[type, ...],
                         recompile: bool = True) -> int:
    """Rewrite eligible ``a + b`` into ``a.add_(b)`` in ``gm`` (in place); returns how many.
    ``safe_producers``: the layer types whose output may be added into (those whose records
    say ``inplace_add_safe``; subclasses included). ``recompile=False`` leaves regenerating
    the code to a caller that edits more."""
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in (operator.add, torch.add) \
                or len(node.args) != 2 or node.kwargs:
            continue
        left, right = node.args
        if not isinstance(left, fx.Node) or left.op != "call_module" or len(left.users) != 1:
            continue
        if not isinstance(gm.get_submodule(cast(str, left.target)), safe_producers):
            continue
        if _shape(left) is None or _shape(left) != _shape(right):
            continue
        node.op, node.target = "call_method", "add_"
        count += 1
    if count and recompile:
        gm.graph.lint()
        gm.recompile()
    return count
