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
from collections.abc import Mapping
from dataclasses import replace

import torch
from torch import nn

from fxrazor.decompose import decompose_modules
from fxrazor.layers import LayerRecord, UnitWeights
from fxrazor.supernet import Supernet

__all__ = ["zero_pruned_channels"]


def _holds(model: nn.Module, target: str) -> bool:
    owner, _, attr = target.rpartition(".")
    try:
        return isinstance(getattr(model.get_submodule(owner) if owner else model, attr, None),
                          torch.Tensor)
    except AttributeError:
        return False


def _zero(tensor: torch.Tensor, dim: int, positions: torch.Tensor) -> None:
    with torch.no_grad():
        tensor.index_fill_(dim, positions, 0.0)


def zero_pruned_channels(model: nn.Module, supernet: Supernet,
                         layers: Mapping[type, LayerRecord] | None = None) -> nn.Module:
    """A copy of ``model`` whose producers of every pruned unit channel output zeros.

    Layers that ``convert`` decomposes (``nn.MultiheadAttention``, Swin window attention)
    are decomposed in the copy too, so that every member of every unit exists in it.

    Args:
        model: the original model the supernet was converted from.
        supernet: the :class:`fxrazor.Supernet` with the choices to check.
        layers: the layer records of the conversion (default: the library's), which say
            on which weight dim each layer keeps its channels.
    """
    zeroed = copy.deepcopy(model)
    # the supernet's layer names are those of the decomposed model (separate q/k/v layers
    # where the model has fused attention); the decomposition computes the same function
    decompose_modules(zeroed)
    for unit, spec in zip(supernet.every_unit(), supernet.analysis.units, strict=True):
        pruned = (~unit.current_mask).nonzero().flatten().numpy()
        if not len(pruned):
            continue
        # every tensor that writes the unit's channels (not the layers that read them);
        # a tensor that tracing made a constant (``_tensor_constant0``: the model builds it
        # in its forward) is not the model's to zero
        spec = replace(spec, members=tuple(m for m in spec.members
                                           if not m[0].is_param or _holds(zeroed, m[0].target)))
        for written in UnitWeights(zeroed, spec, layers).outputs():
            _zero(written.weight, written.dim, torch.from_numpy(written.positions[pruned].ravel()))
    return zeroed
