"""The weights that produce a unit's channels, read through the layer records.

A channel unit that ranks its channels by their weights (L1 today) gets them through
:meth:`~fxrazor.mutables.channel_unit.MutableChannelUnit.prepare_from_weights`, with a
:class:`UnitWeights`: for every member that creates the unit's channels, the tensor, the
dim that holds them (from the layer's record: a transposed conv keeps its output channels
on weight dim 1, an embedding on dim 1) and where each unit channel sits along that dim.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> model = nn.Sequential(nn.ConvTranspose2d(2, 4, 1), nn.Conv2d(4, 2, 1))
    >>> sn = fxrazor.convert(model, torch.randn(1, 2, 3, 3))
    >>> [(p.dim, tuple(p.weight.shape)) for p in UnitWeights(sn.graph_module,
    ...                                                      sn.analysis.units[0]).producers()]
    [(1, (2, 4, 1, 1)), (0, (4,))]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fxrazor.analysis.result import Slot, UnitSpec
from fxrazor.layers.records import LAYERS, LayerRecord
from fxrazor.trace.tracer import lookup_by_type

__all__ = ["ProducerWeight", "UnitWeights", "UnitMember"]


@dataclass(frozen=True)
class ProducerWeight:
    """One tensor that creates a unit's channels.

    Attributes:
        weight: the tensor (a layer's weight or bias, or a parameter used in the graph).
        dim: the dim of ``weight`` that holds the channels.
        positions: a (num_channels, r) array: unit channel k is positions ``positions[k]``
            along ``dim``.
        slot: the unit member the tensor belongs to (its layer path and role).
    """

    weight: torch.Tensor
    dim: int
    positions: np.ndarray
    slot: Slot | None = None


class UnitWeights:
    """The producing weights of one unit of a supernet, found when asked for.

    Args:
        model: the supernet's graph module (or any module with the same layer paths).
        spec: the unit's members, from the analysis.
        layers: the layer records of the conversion (default: the library's).
    """

    def __init__(self, model: nn.Module, spec: UnitSpec,
                 layers: Mapping[type, LayerRecord] | None = None) -> None:
        self.model = model
        self.spec = spec
        self.layers = LAYERS if layers is None else layers

    def producers(self, with_bias: bool = True) -> Iterator[ProducerWeight]:
        """Every tensor that creates the unit's channels: per producing layer its weight
        (and bias, unless ``with_bias`` is False); per parameter slot the parameter."""
        return self._tensors(lambda slot: slot.is_producer, with_bias)

    def outputs(self, with_bias: bool = True) -> Iterator[ProducerWeight]:
        """Every tensor that writes the unit's channels: the producers, the norms over them
        and constant tables (all members but the layers that read the channels)."""
        return self._tensors(lambda slot: slot.role != "in", with_bias)

    def consumers(self) -> Iterator[ProducerWeight]:
        """Every layer weight that reads the unit's channels (its input dim), e.g. the
        next conv's columns."""
        return self._tensors(lambda slot: slot.role == "in", with_bias=False)

    def _tensors(self, select: Callable[[Slot], bool], with_bias: bool
                 ) -> Iterator[ProducerWeight]:
        for slot, positions in self.spec.members:
            if not select(slot):
                continue
            if slot.is_param:
                owner, _, attr = slot.target.rpartition(".")
                value = getattr(self.model.get_submodule(owner) if owner else self.model, attr)
                yield ProducerWeight(value, slot.param_dim, positions, slot)
                continue
            layer = self.model.get_submodule(slot.target)
            weight = getattr(layer, "weight", None)
            if isinstance(weight, torch.Tensor):  # (a norm without affine weights has none)
                yield ProducerWeight(weight, self._dim(layer, slot), positions, slot)
            bias = getattr(layer, "bias", None)
            if with_bias and isinstance(bias, torch.Tensor):
                yield ProducerWeight(bias, 0, positions, slot)

    def _dim(self, layer: nn.Module, slot: Slot) -> int:
        record = lookup_by_type(self.layers, layer)
        static = getattr(type(layer), "static_type", None)  # a dynamic op: its layer's
        if record is None and static is not None:
            record = self.layers.get(static)
        if record is None or slot.role not in record.channel_dims:
            raise KeyError(f"no layer record says where '{slot.target}' keeps its "
                           f"{slot.role!r} channels")
        return record.channel_dims[slot.role]


@dataclass(frozen=True)
class UnitMember:
    """One slot of a unit in a supernet, with the layer now at it
    (``Supernet.unit_members``): a layer's role, or a dim of a parameter.

    Attributes:
        slot: the slot (``target``, ``role``: ``out``/``in``/``channels``/``dim<k>``).
        module: the layer at ``slot.target`` (its dynamic op), or None for a parameter.
        positions: a (num_channels, r) array: unit channel k is positions
            ``positions[k]`` of the slot.
    """

    slot: Slot
    module: nn.Module | None
    positions: np.ndarray

    @property
    def target(self) -> str:
        return self.slot.target

    @property
    def role(self) -> str:
        return self.slot.role
