"""Equivalence oracles shared by the tests: pruning is checked by numbers, not shapes."""

from __future__ import annotations

import copy

import torch
from torch import nn

import fxrazor

__all__ = ["zero_pruned_channels", "count_params", "assert_close"]


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def assert_close(actual, expected, rtol=1e-4, atol=1e-4):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def _zero(tensor: torch.Tensor | None, dim: int, positions: torch.Tensor) -> None:
    if tensor is not None:
        with torch.no_grad():
            tensor.index_fill_(dim, positions, 0.0)


def zero_pruned_channels(model: nn.Module, supernet: fxrazor.Supernet) -> nn.Module:
    """A copy of ``model`` whose producers of every pruned unit channel output zeros.

    Conv/linear rows and biases, norm weights and biases and parameter slices of the
    pruned channels are zeroed. If pruning is right, this model computes what the frozen
    subnet computes.
    """
    zeroed = copy.deepcopy(model)
    for unit, spec in zip(supernet.all_units, supernet.analysis.units, strict=True):
        pruned = (~unit.current_mask).nonzero().flatten()
        if not len(pruned):
            continue
        for slot, positions in spec.members:
            pos = torch.from_numpy(positions[pruned.numpy()].ravel())
            if slot.role == "in":
                continue
            if slot.is_param:
                owner, _, attr = slot.target.rpartition(".")
                param = getattr(zeroed.get_submodule(owner) if owner else zeroed, attr)
                _zero(param, int(slot.role[3:]), pos)
                continue
            layer = zeroed.get_submodule(slot.target)
            if isinstance(layer, nn.Embedding):
                _zero(layer.weight, 1, pos)
            elif isinstance(layer, nn.modules.conv._ConvTransposeNd):
                _zero(layer.weight, 1, pos)
                _zero(layer.bias, 0, pos)
            else:
                _zero(layer.weight, 0, pos)
                _zero(getattr(layer, "bias", None), 0, pos)
    return zeroed
