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

import itertools
import logging
import math
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from torch import nn

from fxrazor.errors import FixedMutableError
from fxrazor.mutables.mutable_channel import SquentialMutableChannel
from fxrazor.mutables.one_shot_unit import OneShotMutableChannelUnit
from fxrazor.ops.base import Selection
from fxrazor.ops.switchable_norm import SWITCHABLE_BATCH_NORMS
from fxrazor.utils import make_divisible

__all__ = ["SlimmableChannelUnit"]

logger = logging.getLogger(__name__)


class _Owner(NamedTuple):
    """A unit with channels in a norm layer, and its positions there (a row per channel)."""

    unit: Any  # a SlimmableChannelUnit (a plain reference: units are the supernet's)
    positions: np.ndarray


class _SwitchedNorm(NamedTuple):
    """A BatchNorm made switchable: the layer, every unit with channels in it (in the
    analysis' order) and its number of channels."""

    module: Any  # a switchable BatchNorm of fxrazor.ops.switchable_norm
    owners: tuple[_Owner, ...]
    size: int


# A norm layer over several units gets a set per combination of their candidates; past
# this many (a DenseNet's concatenations) it keeps one set of statistics instead.
MAX_SETS = 64


def _owner_positions(model: Any, target: str) -> list[tuple[str, np.ndarray]]:
    """``(unit name, positions)`` of every unit with channels in norm layer ``target``."""
    found = []
    for spec in model.analysis.units:
        for slot, positions in spec.members:
            if slot.target == target and slot.role == "channels":
                found.append((spec.name, positions))
                break
    return found


def _compact(kept: np.ndarray) -> Selection:
    """A slice for a contiguous block of kept positions, else their indices."""
    if kept[-1] - kept[0] + 1 == len(kept):
        return slice(int(kept[0]), int(kept[-1]) + 1)
    return torch.from_numpy(kept)


class SlimmableChannelUnit(OneShotMutableChannelUnit):
    """A one-shot unit for slimmable training (Yu et al., "Slimmable Neural Networks",
    ICLR 2019): several widths, the candidates, trained together; the candidates default
    to number mode and to full width only.

    :meth:`prepare_for_pruning` (called by ``fxrazor.convert``) replaces every member
    BatchNorm1d/2d/3d by a switchable one (:mod:`fxrazor.ops.switchable_norm`) with one
    set of statistics and affine parameters per subset of channels the layer keeps under
    the candidates, each starting as the slice of the layer's own (so full width is the
    original model), and remembers them (a plain list: they belong to the graph, not to
    the unit). A set is found by the positions kept, named by its width (``'4'``, as in
    MMRazor) or, for a layer holding several units' channels (a concatenation), by the
    units' kept counts (``'4_8'``), one set per combination of their candidates.
    :meth:`alter_candidates_of_switchbn` changes the candidates and rebuilds the sets.

    A layer past ``MAX_SETS`` combinations (a DenseNet's concatenations), or shared with
    a unit of another kind, is left as the ordinary dynamic BatchNorm, whose statistics
    all widths share; a warning names it. So is a SyncBatchNorm. Channels kept that no
    set covers (only possible by changing a mutable channel's candidates past its unit)
    stop the forward with an ``InvalidChoiceError`` naming the layer and its widths.
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
    def _kept_counts(self, choices: list[int | float]) -> list[int]:
        """The channels each choice keeps (as ``kept_count`` would), without applying it."""
        probe = SquentialMutableChannel(self.num_channels, self.choice_mode)
        counts = set()
        for choice in choices:
            probe.current_choice = choice
            count = probe.activated_channels
            if self.divisor > 1:
                count = make_divisible(count, self.divisor, self.min_value, self.min_ratio)
            counts.add(max(1, min(self.num_channels, count)))
        return sorted(counts)

    def _candidate_counts(self) -> list[int]:
        """The kept counts of the candidates (remembered per list of candidates: a
        conversion asks once per layer of the unit)."""
        choices = list(self.candidate_choices)
        cached = self.__dict__.get("_fxr_counts")
        if cached is None or cached[0] != choices:
            cached = (choices, self._kept_counts(choices))
            self.__dict__["_fxr_counts"] = cached
        return cached[1]

    @staticmethod
    def _layer_sets(entry: _SwitchedNorm, counts: dict[int, list[int]]
                    ) -> dict[int | str, Selection]:
        """The sets of a norm layer, ``{name: kept positions}``, one per combination of
        its units' candidate counts (``counts`` by ``id(unit)``, else the unit's own):
        each unit keeps its first channels, positions of no unit stay. With one unit a set
        is named by its width (as in MMRazor); with several by the units' counts joined by
        ``_`` in the analysis' order (``'4_8'``: the first unit keeps 4, the second 8)."""
        per_unit = [counts.get(id(o.unit)) or o.unit._candidate_counts() for o in entry.owners]
        sets: dict[int | str, Selection] = {}
        for combo in itertools.product(*per_unit):
            keep = np.ones(entry.size, dtype=bool)
            for owner, k in zip(entry.owners, combo, strict=True):
                keep[owner.positions.ravel()] = False
                keep[owner.positions[:k].ravel()] = True
            kept = np.flatnonzero(keep)
            name: int | str = len(kept) if len(combo) == 1 else "_".join(map(str, combo))
            sets[name] = _compact(kept)
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
        units: dict[str, Any] = {}
        for member in unit_members(self.name):
            static = getattr(type(member.module), "static_type", type(member.module))
            if member.role != "channels" or static not in SWITCHABLE_BATCH_NORMS \
                    or any(known.module is member.module for known in self._fxr_switched):
                continue  # (a layer already switched keeps its sets as trained)
            if not units and member.positions.size < member.slot.size:
                units = {unit.name: unit for unit in cast(Any, model).every_unit()}
            self._switch(model, member, SWITCHABLE_BATCH_NORMS[static], replace_layer, units)

    def _switch(self, model: Any, member: Any, kind: Any, replace_layer: Any,
                units: dict[str, Any]) -> None:
        module, target = member.module, member.target
        if isinstance(module, tuple(SWITCHABLE_BATCH_NORMS.values())):
            return  # made switchable by someone else: its sets are not this unit's to make
        if member.positions.size == member.slot.size:  # the unit's alone
            owners = [_Owner(self, member.positions)]
        else:  # other units' channels or pinned ones too
            owners = [_Owner(units[name], positions)
                      for name, positions in _owner_positions(model, target)]
        entry = _SwitchedNorm(module, tuple(owners), member.slot.size)
        strangers = [o.unit.name for o in owners if not isinstance(o.unit, SlimmableChannelUnit)]
        combinations = 0 if strangers else \
            math.prod(len(o.unit._candidate_counts()) for o in owners)
        if strangers or combinations > MAX_SETS:
            if owners[0].unit is self:  # (once per layer, not once per unit of it)
                names = [o.unit.name for o in owners]
                logger.warning(
                    "BatchNorm %r holds channels of %d units %s (%s); it keeps one set of "
                    "statistics for all their widths", target, len(names),
                    names[:4] + (["..."] if len(names) > 4 else []),
                    f"units of another kind: {strangers}" if strangers
                    else f"{combinations} combinations of their candidates, over {MAX_SETS}")
            return
        switchable = kind.from_static(module, self._layer_sets(entry, {}), name=target)
        replace_layer(target, switchable)
        entry = entry._replace(module=switchable)
        for owner in owners:  # every unit of the layer rebuilds its sets when altered
            owner.unit._remember(entry)

    def _remember(self, entry: _SwitchedNorm) -> None:
        if all(known.module is not entry.module for known in self._fxr_switched):
            self._fxr_switched.append(entry)

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
        counts = {id(self): self._kept_counts(fresh.candidate_choices)}
        plans = [(entry.module, self._layer_sets(entry, counts))
                 for entry in self._fxr_switched]
        self.mutable_channel = fresh.mutable_channel
        self.mutable_channel.name = self.name
        self.candidate_choices = self.mutable_channel.choices
        for module, sets in plans:
            module.set_candidates(sets)
