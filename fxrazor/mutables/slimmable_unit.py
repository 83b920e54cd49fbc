"""The slimmable channel unit: several widths trained together, each with its own BatchNorm.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.Conv2d(8, 2, 1))
    >>> sn = fxrazor.convert(model, torch.randn(1, 3, 4, 4), unit="slimmable",
    ...                      unit_args={"candidate_choices": [4, 8]})
    >>> bn = sn.graph_module.get_submodule("1")
    >>> type(bn).__name__, bn.widths
    ('SwitchableBatchNorm2d', [4, 8])
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from fxrazor.errors import FixedMutableError
from fxrazor.mutables.channel_unit import (
    OneShotMutableChannelUnit,
)
from fxrazor.mutables.mutable_channel import SquentialMutableChannel
from fxrazor.ops.base import Selection
from fxrazor.ops.switchable_norm import SWITCHABLE_BATCH_NORMS
from fxrazor.utils import make_divisible

__all__ = ["SlimmableChannelUnit"]

logger = logging.getLogger(__name__)


class _SwitchedNorm(NamedTuple):
    """A BatchNorm the unit made switchable: the layer, the unit's positions in it (one
    row per unit channel) and its number of channels."""

    module: Any  # a switchable BatchNorm of fxrazor.ops.switchable_norm
    positions: np.ndarray
    size: int


def _owners(model: nn.Module, target: str) -> int:
    """How many units have channels in the norm layer ``target`` (from the analysis)."""
    analysis = getattr(model, "analysis", None)
    if analysis is None:
        return 1
    return sum(any(slot.target == target and slot.role == "channels" for slot, _ in spec.members)
               for spec in analysis.units)


class SlimmableChannelUnit(OneShotMutableChannelUnit):
    """A one-shot unit for slimmable training (Yu et al., "Slimmable Neural Networks",
    ICLR 2019): several widths, the candidates, trained together; the candidates default
    to number mode and to full width only.

    :meth:`prepare_for_pruning` (called by ``fxrazor.convert``) replaces every member
    BatchNorm1d/2d/3d by a switchable one (:mod:`fxrazor.ops.switchable_norm`) with one
    set of statistics and affine parameters per width the layer takes under the
    candidates, each starting as the slice of the layer's own (so full width is the
    original model), and remembers them (a plain list: they belong to the graph, not to
    the unit). :meth:`alter_candidates_of_switchbn` changes the candidates and rebuilds
    those sets.

    A BatchNorm whose channels belong to several units is left as the ordinary dynamic
    BatchNorm, whose statistics all widths share (its width depends on several units'
    choices, so it cannot be keyed by one unit's candidates); a warning names it. So is a
    SyncBatchNorm. A width with no set (possible only by changing the mutable channel's
    candidates past the unit) stops the forward with an ``InvalidChoiceError`` naming the
    layer and the widths it has.
    """

    _fxr_switched: list[_SwitchedNorm]  # (a plain attribute, set in __init__)

    def __init__(self, num_channels: int, candidate_choices: list[int | float] | None = None,
                 choice_mode: str = "number", divisor: int = 1, min_value: int = 1,
                 min_ratio: float = 0.9) -> None:
        candidates: list[int | float] = candidate_choices if candidate_choices else [num_channels] \
            if choice_mode == "number" else [1.0]
        super().__init__(num_channels, candidates, choice_mode, divisor, min_value, min_ratio)
        self.__dict__["_fxr_switched"] = []  # plain: the layers are the graph's

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__({"_fxr_switched": [], **state})

    @property
    def switchable_norms(self) -> list[nn.Module]:
        """The BatchNorm layers this unit made switchable."""
        return [entry.module for entry in self._fxr_switched]

    # ---- widths -------------------------------------------------------------------------------
    def _kept_count_of(self, choice: int | float) -> int:
        """The channels a choice keeps (as ``kept_count`` would), without applying it."""
        probe = SquentialMutableChannel(self.num_channels, self.choice_mode)
        probe.current_choice = choice
        count = probe.activated_channels
        if self.divisor > 1:
            count = make_divisible(count, self.divisor, self.min_value, self.min_ratio)
        return max(1, min(self.num_channels, count))

    @staticmethod
    def _layer_sets(entry: _SwitchedNorm, counts: list[int]) -> dict[int, Selection]:
        """``{width: kept positions}`` of a norm layer for each count of kept unit
        channels: the unit keeps its first channels; positions it does not own stay."""
        sets: dict[int, Selection] = {}
        for k in counts:
            keep = np.ones(entry.size, dtype=bool)
            keep[entry.positions.ravel()] = False
            keep[entry.positions[:k].ravel()] = True
            kept = np.flatnonzero(keep)
            contiguous = kept[-1] - kept[0] + 1 == len(kept)
            sets[len(kept)] = slice(int(kept[0]), int(kept[-1]) + 1) if contiguous \
                else torch.from_numpy(kept)
        return sets

    # ---- the switchable BatchNorm layers -----------------------------------------------------
    def prepare_for_pruning(self, model: nn.Module) -> None:
        """Put a switchable BatchNorm in place of each member BatchNorm of ``model`` (a
        supernet); with a plain model, only check that the members exist."""
        unit_members = getattr(model, "unit_members", None)
        replace_layer = getattr(model, "replace_layer", None)
        if unit_members is None or replace_layer is None:
            super().prepare_for_pruning(model)
            return
        counts = [self._kept_count_of(c) for c in self.candidate_choices]
        known = {id(entry.module) for entry in self._fxr_switched}
        for member in unit_members(self.name):
            module = member.module
            static = getattr(type(module), "static_type", type(module))
            if member.role != "channels" or static not in SWITCHABLE_BATCH_NORMS:
                continue
            entry = _SwitchedNorm(module, member.positions, member.slot.size)
            if id(module) in known:  # prepared before: keep its sets, add missing widths
                module.set_candidates(self._layer_sets(entry, counts))
                continue
            if member.positions.size < member.slot.size \
                    and _owners(model, member.target) > 1:
                logger.warning(
                    "slimmable unit %r: BatchNorm %r also holds other units' channels; it "
                    "keeps one set of statistics for all widths", self.name, member.target)
                continue
            switchable = SWITCHABLE_BATCH_NORMS[static].from_static(
                module, self._layer_sets(entry, counts), name=member.target)
            replace_layer(member.target, switchable)
            self._fxr_switched.append(entry._replace(module=switchable))

    def alter_candidates_of_switchbn(self, candidates: list[int | float]) -> None:
        """Make ``candidates`` the unit's candidate choices and rebuild the sets of its
        switchable BatchNorm layers: a width that stays keeps its set as trained, a new
        width starts as the slice of the full-width set, a width no longer taken is
        dropped. The choice becomes the largest candidate. Checked before any change."""
        if self.is_fixed:
            raise FixedMutableError(
                f"unit {self.name!r} is fixed at {self.current_choice!r}; its candidates "
                f"cannot change")
        fresh = OneShotMutableChannelUnit(self.num_channels, candidates, self.choice_mode,
                                          self.divisor, self.min_value, self.min_ratio)
        counts = [self._kept_count_of(c) for c in fresh.candidate_choices]
        plans = [(entry.module, self._layer_sets(entry, counts))
                 for entry in self._fxr_switched]
        self.mutable_channel = fresh.mutable_channel
        self.mutable_channel.name = self.name
        self.candidate_choices = self.mutable_channel.choices
        for module, sets in plans:
            module.set_candidates(sets)
