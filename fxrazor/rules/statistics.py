"""Normalisation statistics written with tensor ops: RMSNorm and LayerNorm by hand.

Many models (Hugging Face's ``LlamaRMSNorm``, T5's layer norm) normalise over the channel
dim with plain ops: ``x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)``. The mean is
then a statistic of the kept channels, exactly as in ``nn.LayerNorm`` / ``nn.RMSNorm``
(whose rule lets the channels be pruned): a pruned model computes it over the channels it
keeps. Any other reduction over channels stays pinned.

Example:
    >>> import torch
    >>> from torch import fx, nn
    >>> class RMS(nn.Module):
    ...     def forward(self, x):
    ...         return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    >>> gm = fx.symbolic_trace(RMS())
    >>> [n.name for n in gm.graph.nodes if is_norm_statistic(n)]
    ['mean']
"""

from __future__ import annotations

import operator

import torch
from torch import fx

__all__ = ["is_norm_statistic"]

_MEAN = (torch.mean, "mean")
_POW = (torch.pow, operator.pow, "pow")
_SUB = (torch.sub, operator.sub, "sub")


def _is(node: object, targets: tuple[object, ...]) -> bool:
    return isinstance(node, fx.Node) and node.op in ("call_function", "call_method") \
        and node.target in targets


def _arg(node: fx.Node, index: int, name: str, default: object = None) -> object:
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def is_norm_statistic(node: fx.Node) -> bool:
    """Whether ``node`` is the mean of an RMSNorm / LayerNorm written with tensor ops: a
    mean over the last dim only, kept as a size-1 dim, of a square (``x.pow(2)``,
    ``x * x``, ``x.square()``) or subtracted from its own input (the centring ``x - mu``)."""
    if not _is(node, _MEAN) or not bool(_arg(node, 2, "keepdim", False)):
        return False
    dim = _arg(node, 1, "dim")
    dims = [dim] if isinstance(dim, int) else dim
    meta = node.meta.get("tensor_meta")
    ndim = len(meta.shape) if meta is not None and hasattr(meta, "shape") else None
    if not isinstance(dims, (list, tuple)) or len(dims) != 1 or not isinstance(dims[0], int) \
            or not (dims[0] == -1 or (ndim is not None and dims[0] == ndim - 1)):
        return False
    source = node.args[0]
    if _is(source, _POW) and _arg(source, 1, "exponent") == 2:  # type: ignore[arg-type]
        return True
    if _is(source, (torch.square, "square")):
        return True
    if _is(source, (torch.mul, operator.mul, "mul")) and isinstance(source, fx.Node) \
            and len(source.args) == 2 and source.args[0] is source.args[1]:
        return True
    return any(_is(user, _SUB) and user.args[:2] == (source, node) for user in node.users)
