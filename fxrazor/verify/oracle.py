"""The zero-invariance oracle: an independent check that a pruning is right.

Zeroing, in the original model, every producer of every pruned channel (conv/linear rows and
biases, norm weights and biases, parameter slices) must give the output of the frozen
subnet, for models without normalisation over pruned channels (BatchNorm in eval mode is
fine). A wrong unit (a channel pruned in one layer but still used by another) breaks it.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 2, 1)).eval()
    >>> x = torch.randn(1, 3, 4, 4)
    >>> sn = fxrazor.convert(model, x)
    >>> sn.set_choices({"0": 3})
    >>> torch.allclose(zero_pruned_channels(model, sn)(x), fxrazor.freeze(sn)(x), atol=1e-6)
    True
"""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
from torch import nn

from fxrazor.decompose import decompose_modules

__all__ = ["zero_pruned_channels"]


def _zero(tensor: torch.Tensor | None, dim: int, positions: torch.Tensor) -> None:
    if tensor is not None:
        with torch.no_grad():
            tensor.index_fill_(dim, positions, 0.0)


def _zero_slot(model: nn.Module, slot: Any, pos: torch.Tensor) -> None:
    if slot.is_param:
        owner, _, attr = slot.target.rpartition(".")
        param = getattr(model.get_submodule(owner) if owner else model, attr)
        _zero(param, int(slot.role[3:]), pos)
        return
    layer = model.get_submodule(slot.target)
    if isinstance(layer, nn.Embedding):
        _zero(layer.weight, 1, pos)
    elif isinstance(layer, nn.modules.conv._ConvTransposeNd):
        _zero(layer.weight, 1, pos)
        _zero(layer.bias, 0, pos)
    else:
        _zero(cast(torch.Tensor, layer.weight), 0, pos)
        _zero(getattr(layer, "bias", None), 0, pos)


def zero_pruned_channels(model: nn.Module, supernet: Any) -> nn.Module:
    """A copy of ``model`` whose producers of every pruned unit channel output zeros.

    Layers that ``convert`` decomposes (``nn.MultiheadAttention``, Swin window attention)
    are decomposed in the copy too, so that every member of every unit exists in it.

    Args:
        model: the original model the supernet was converted from.
        supernet: the :class:`fxrazor.Supernet` with the choices to check.
    """
    zeroed = copy.deepcopy(model)
    # the supernet's layer names are those of the decomposed model (separate q/k/v layers
    # where the model has fused attention); the decomposition computes the same function
    decompose_modules(zeroed)
    for unit, spec in zip(supernet.all_units, supernet.analysis.units, strict=True):
        pruned = (~unit.current_mask).nonzero().flatten()
        if not len(pruned):
            continue
        for slot, positions in spec.members:
            if slot.role != "in":
                _zero_slot(zeroed, slot, torch.from_numpy(positions[pruned.numpy()].ravel()))
    return zeroed
