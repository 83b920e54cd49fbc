"""DMCP's budget term: the expected FLOPs of a supernet, differentiable in the arch params.

A convolution's multiply-accumulates are ``c_in * c_out * k_h * k_w * H_out * W_out /
groups``; DMCP takes their expectation over the units' Markov chains. Units are drawn
independently, so the expectation of a layer whose input and output follow different units
is the product of the expected widths; a pruned dim's expected width is the sum, over the
units that cover it, of (positions per unit channel) x (the unit's expected width), plus
the positions no unit covers. Depthwise convolutions (``groups == in_channels``) keep whole
groups, so theirs is ``E[c_out] * k_h * k_w * H_out * W_out``. Linear layers count
``c_in * c_out`` per output row. The geometry comes from the shapes ``fxrazor.convert``
recorded on the graph, so the FLOPs are those of one run on the supernet's example inputs
(build it with a batch of one for FLOPs per sample). Transposed convolutions, attention
products and element-wise ops are not counted.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 20, 1), nn.BatchNorm2d(20), nn.Conv2d(20, 5, 1))
    >>> sn = fxrazor.convert(model, torch.randn(1, 3, 2, 2), unit="dmcp")
    >>> # transitions 0.5: E[c] = 2 + (0.5 + ... + 0.5**18) channels; FLOPs (3 + 5) * 4 * E[c]
    >>> round(expected_flops(sn).item(), 4)
    95.9999
    >>> current_flops(sn)  # full width: (3 * 20 + 20 * 5) * 4
    640.0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from typing import TYPE_CHECKING

import torch
from torch import nn

from fxrazor.errors import InvalidArgumentError
from fxrazor.mutables.channel_unit import MutableChannelUnit
from fxrazor.mutables.dmcp_unit import DMCPChannelUnit

if TYPE_CHECKING:
    from fxrazor.supernet import Supernet

__all__ = ["LayerFlops", "flops_layers", "expected_flops", "current_flops"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
Width = torch.Tensor | float


@dataclass(frozen=True)
class LayerFlops:
    """One call of a conv or linear layer in the graph, as FLOPs are counted.

    Attributes:
        target: the layer's path.
        in_cover / out_cover: per unit covering the input / output dim, ``(unit name,
            positions per unit channel)``.
        in_fixed / out_fixed: positions of that dim no unit covers.
        per_pair: FLOPs per (input, output) channel pair: kernel size x output positions /
            groups (for a depthwise conv, per output channel).
        depthwise: a depthwise conv: FLOPs follow the output width alone.
    """

    target: str
    in_cover: tuple[tuple[str, int], ...]
    in_fixed: int
    out_cover: tuple[tuple[str, int], ...]
    out_fixed: int
    per_pair: float
    depthwise: bool

    def flops(self, width: Callable[[str], Width]) -> Width:
        """The layer's FLOPs given each unit's (expected) number of kept channels."""
        def dim(cover: tuple[tuple[str, int], ...], fixed: int) -> Width:
            total: Width = float(fixed)
            for name, r in cover:
                total = total + r * width(name)
            return total

        out = dim(self.out_cover, self.out_fixed)
        if self.depthwise:
            return out * self.per_pair
        return dim(self.in_cover, self.in_fixed) * out * self.per_pair


def flops_layers(supernet: Supernet) -> list[LayerFlops]:
    """The conv and linear calls of the supernet's graph, with their geometry and units."""
    graph_module = getattr(supernet, "graph_module", None)
    analysis = getattr(supernet, "analysis", None)
    if graph_module is None or analysis is None:
        raise InvalidArgumentError(
            f"expected FLOPs need a Supernet from fxrazor.convert, got "
            f"{type(supernet).__name__}")
    cover: dict[tuple[str, str], list[tuple[str, int, int]]] = {}
    for spec in analysis.units:
        for slot, positions in spec.members:
            if not slot.is_param:
                cover.setdefault((slot.target, slot.role), []).append(
                    (spec.name, int(positions.shape[1]), int(positions.size)))

    def split(target: str, role: str, size: int) -> tuple[tuple[tuple[str, int], ...], int]:
        found = cover.get((target, role), [])
        return tuple((name, r) for name, r, _ in found), size - sum(n for _, _, n in found)

    layers = []
    for node in graph_module.graph.nodes:
        if node.op != "call_module":
            continue
        module = graph_module.get_submodule(node.target)
        if isinstance(module, _CONVS):
            c_in, c_out = module.in_channels, module.out_channels
            depthwise = module.groups > 1 and module.groups == c_in
            # a depthwise conv's FLOPs follow its output alone; others share groups
            per_out = prod(module.kernel_size) / (1 if depthwise else module.groups)
        elif isinstance(module, nn.Linear):
            c_in, c_out, per_out, depthwise = module.in_features, module.out_features, 1.0, False
        else:
            continue
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise InvalidArgumentError(
                f"layer {node.target!r} has no recorded output shape; build the supernet "
                f"with fxrazor.convert")
        out_dim = -1 if isinstance(module, nn.Linear) else \
            (1 if len(meta.shape) == len(module.kernel_size) + 2 else 0)
        positions = prod(meta.shape) / meta.shape[out_dim]  # output rows / pixels
        layers.append(LayerFlops(node.target, *split(node.target, "in", c_in),
                                 *split(node.target, "out", c_out), per_out * positions,
                                 depthwise))
    return layers


def _units(supernet: Supernet) -> dict[str, MutableChannelUnit]:
    return {u.name: u for u in supernet.every_unit()}


def expected_flops(supernet: Supernet) -> torch.Tensor:
    """The supernet's FLOPs in expectation over its DMCP units' chains (a differentiable
    scalar in their ``arch_param``); other units, and fixed ones, count their kept width.

    Example:
        >>> import torch, fxrazor
        >>> from torch import nn
        >>> sn = fxrazor.convert(nn.Sequential(nn.Linear(4, 40), nn.Linear(40, 2)),
        ...                      torch.randn(1, 4), unit="dmcp")
        >>> flops = expected_flops(sn); flops.backward()
        >>> sn.units[0].arch_param.grad.shape
        torch.Size([18])
    """
    layers = flops_layers(supernet)  # (checks that it is a supernet)
    units = _units(supernet)

    def width(name: str) -> Width:
        unit = units[name]
        if isinstance(unit, DMCPChannelUnit) and unit.is_mutable:
            return unit.expected_channels()
        return float(unit.activated_channels)

    total: Width = 0.0
    for layer in layers:
        total = total + layer.flops(width)
    return torch.as_tensor(total, dtype=torch.get_default_dtype())


def current_flops(supernet: Supernet) -> float:
    """The FLOPs of the subnet chosen now (every unit at its kept width), counted as
    :func:`expected_flops` counts them: what the frozen subnet costs."""
    layers = flops_layers(supernet)
    units = _units(supernet)
    total = 0.0
    for layer in layers:
        total += float(layer.flops(lambda name: float(units[name].activated_channels)))
    return total
