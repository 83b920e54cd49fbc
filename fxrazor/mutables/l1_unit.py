"""The L1-norm channel unit: keeps the channels whose weights are largest now.

Example:
    >>> import torch
    >>> unit = L1MutableChannelUnit(4)
    >>> unit.set_importance(torch.tensor([0.1, 3.0, 2.0, 0.5]))
    >>> unit.current_choice = 2
    >>> unit.current_mask.tolist()
    [False, True, True, False]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from fxrazor.errors import InvalidChoiceError
from fxrazor.mutables.channel_unit import (
    ChannelWeights,
    SequentialMutableChannelUnit,
)

__all__ = ["L1MutableChannelUnit"]


class _Producer(NamedTuple):
    """One producing tensor as read now: the tensor, its channel dim, the unit's positions."""

    weight: torch.Tensor
    dim: int
    positions: np.ndarray


class _Source(NamedTuple):
    """Where a producing tensor lives: ``getattr(root.get_submodule(owner), attr)``."""

    owner: str
    attr: str
    dim: int
    positions: np.ndarray


class _WeightReader:
    """The producing weights of one unit, looked up by path on every read, so that a
    replaced layer or parameter is read as it is now. A plain object holding the graph
    module (not an ``nn.Module``: the unit must not own the graph it lives in) and no layer
    table, so it deep-copies and pickles along with the supernet."""

    def __init__(self, root: nn.Module, sources: list[_Source]) -> None:
        self.root = root
        self.sources = sources

    def producers(self, with_bias: bool = True) -> Iterator[_Producer]:
        for source in self.sources:  # (biases are never sources: with_bias is moot)
            value = getattr(self.root.get_submodule(source.owner), source.attr, None)
            if isinstance(value, torch.Tensor):
                yield _Producer(value, source.dim, source.positions)


def _reader(weights: ChannelWeights) -> ChannelWeights:
    """A picklable path-based reader of ``weights`` when it is a ``UnitWeights`` (it has
    ``model`` and ``spec``); any other ``ChannelWeights`` is kept as it is.

    The dims come from ``weights`` itself (its layer records), matched to the member
    slots by tensor identity; the layer table is not kept (it does not pickle)."""
    root, spec = getattr(weights, "model", None), getattr(weights, "spec", None)
    if not isinstance(root, nn.Module) or spec is None:
        return weights
    found: dict[int, list[Any]] = {}
    for producer in weights.producers(with_bias=False):
        found.setdefault(id(producer.weight), []).append(producer)
    sources = []
    for slot, _ in spec.members:
        if not slot.is_producer:
            continue
        owner, attr = slot.target.rpartition(".")[::2] if slot.is_param \
            else (slot.target, "weight")
        matches = found.get(id(getattr(root.get_submodule(owner), attr, None)))
        if matches:  # (a producing layer without a weight tensor has nothing to rank by)
            producer = matches.pop(0)
            sources.append(_Source(owner, attr, producer.dim, producer.positions))
    return _WeightReader(root, sources)


def l1_importance(weights: ChannelWeights, num_channels: int) -> torch.Tensor | None:
    """Per unit channel, the mean |w| of each producing tensor's slice for that channel
    (its filter, row, column, ...; biases not counted), averaged over the r positions a
    member has per unit channel and then over the members; None when no tensor holds
    values (none, or all on the meta device)."""
    total = torch.zeros(num_channels, dtype=torch.float64)
    members = 0
    with torch.no_grad():
        for producer in weights.producers(with_bias=False):
            weight = producer.weight
            if weight.is_meta:
                continue
            size = weight.shape[producer.dim]
            per_position = weight.detach().abs().movedim(producer.dim, 0).reshape(size, -1) \
                .mean(1, dtype=torch.float64).cpu()
            positions = torch.as_tensor(producer.positions, dtype=torch.long)
            total += per_position[positions].mean(1)
            members += 1
    return total.float() / members if members else None


class L1MutableChannelUnit(SequentialMutableChannelUnit):
    """Keeps the channels whose producing weights have the largest mean absolute value.

    As in Li et al., "Pruning Filters for Efficient ConvNets" (arXiv 1608.08710), and
    MMRazor's ``L1MutableChannelUnit``: a channel's importance is, for each member that
    creates the unit's channels (a conv's filter, a transposed conv's or embedding's
    column along weight dim 1, a linear layer's row, a parameter's slice; biases not
    counted), the mean of |w| over that slice; a member with r positions per unit channel
    takes the mean over them; the importance is the average over the members. The kept
    channels are the ``kept_count()`` most important; ties keep the lower index.

    ``fxrazor.convert`` hands the unit its weights (:meth:`prepare_from_weights`); the unit
    keeps a reader of them and ranks the channels by the weights as they are **when the
    choice is set** (MMRazor makes the mask at choice time). The mask is then cached,
    because the supernet reads it on every forward: when the weights change (training),
    the mask does not follow until the choice is set again or :meth:`refresh` is called.
    Weights on the meta device, or no weights at all, rank nothing: the first k channels
    are kept. :meth:`set_importance` gives the ranking by hand instead.

    Example:
        >>> import torch, fxrazor
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(2, 3, 1, bias=False), nn.Conv2d(3, 1, 1))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.tensor([1.0, 3.0, 2.0]).view(3, 1, 1, 1))
        >>> sn = fxrazor.convert(model, torch.randn(1, 2, 4, 4), unit="l1")
        >>> sn.set_choices({"0": 2}); sn.units[0].current_mask.tolist()
        [False, True, True]
        >>> with torch.no_grad():
        ...     _ = sn.graph_module.get_submodule("0").weight[0].mul_(10)
        >>> sn.units[0].refresh(); sn.units[0].current_mask.tolist()
        [True, True, False]
    """

    _fxr_mask: torch.Tensor  # (plain attributes, set in __init__ and refresh)
    _fxr_mask_k: int

    def __init__(self, num_channels: int, choice_mode: str = "number", divisor: int = 1,
                 min_value: int = 1, min_ratio: float = 0.9) -> None:
        super().__init__(num_channels, choice_mode, divisor, min_value, min_ratio)
        # plain attributes: the reader refers to the graph module, which must not become
        # a child of the unit (a module cycle); the mask is cached with its kept count
        self.__dict__.update(_fxr_weights=None, _fxr_importance=None, _fxr_mask=None,
                             _fxr_mask_k=0)

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        buffers = dict(state.get("_buffers", {}))
        old = buffers.pop("importance", None)  # pickled when importance was a buffer
        state["_buffers"] = buffers
        state.setdefault("_fxr_weights", None)
        state.setdefault("_fxr_importance", None if old is None else old.float().cpu())
        state.setdefault("_fxr_mask", None)  # (a copy keeps the mask of its original)
        state.setdefault("_fxr_mask_k", 0)
        super().__setstate__(state)

    # ---- importance -----------------------------------------------------------------------
    def prepare_from_weights(self, weights: ChannelWeights) -> None:
        """Keep a reader of the weights that produce the unit's channels and rank by them."""
        self.__dict__["_fxr_weights"] = _reader(weights)
        self.refresh()

    def set_importance(self, importance: torch.Tensor | None) -> None:
        """Rank the channels by ``importance`` (one score per channel) instead of the
        weights; None goes back to the weights. The mask is made again at once."""
        if importance is not None and (not isinstance(importance, torch.Tensor)
                                       or importance.shape != (self.num_channels,)):
            got = tuple(importance.shape) if isinstance(importance, torch.Tensor) \
                else type(importance).__name__
            raise InvalidChoiceError(
                f"unit {self.name!r}: importance must be a tensor of shape "
                f"({self.num_channels},) or None, got {got}")
        self.__dict__["_fxr_importance"] = None if importance is None \
            else importance.detach().float().cpu().clone()
        self.refresh()

    @property
    def importance(self) -> torch.Tensor:
        """The channel scores now: those set by hand, else from the current weights
        (zeros when there is nothing to rank by, which keeps the first channels)."""
        given = self.__dict__.get("_fxr_importance")
        if given is not None:
            return given.clone()
        reader = self.__dict__.get("_fxr_weights")
        score = None if reader is None else l1_importance(reader, self.num_channels)
        return torch.zeros(self.num_channels) if score is None else score

    # ---- choice and mask ------------------------------------------------------------------
    def _choice_set(self) -> None:
        self.refresh()  # the ranking is made now, from the weights as they are now

    def refresh(self) -> None:
        """Rank the channels again by the current weights (or importance) and remake the
        mask at the current choice, e.g. after training steps changed the weights."""
        k = self.kept_count()
        order = torch.sort(-self.importance, stable=True).indices  # lower index wins ties
        mask = torch.zeros(self.num_channels, dtype=torch.bool)
        mask[order[:k]] = True
        self.__dict__.update(_fxr_mask=mask, _fxr_mask_k=k)

    @property
    def current_mask(self) -> torch.Tensor:
        # A choice changed past the unit's setter (on its mutable channel) is ranked here.
        if self.__dict__.get("_fxr_mask") is None or self._fxr_mask_k != self.kept_count():
            self.refresh()
        return self._fxr_mask.clone()
