"""The channel mutator: the choices of a supernet's channel units, with MMRazor's
``ChannelMutator`` method names.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> sn = fxrazor.convert(nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)),
    ...                      torch.randn(1, 3, 4, 4))
    >>> mutator = ChannelMutator()
    >>> mutator.prepare_from_supernet(sn)
    >>> mutator.current_choices, mutator.min_choices
    ({'0': 8}, {'0': 1})
    >>> mutator.set_choices({"0": 3}); sn.unit("0").activated_channels
    3
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from fxrazor.errors import FxRazorError, InvalidChoiceError, UnsupportedModelError
from fxrazor.mutables.channel_unit import MutableChannelUnit
from fxrazor.mutators.base import MutatorExtremes
from fxrazor.mutators.nas_mutator import check_sample_mode, unknown_keys_error

__all__ = ["ChannelMutator", "OneShotChannelMutator", "sample_unit_choice"]

_TRIES = 64  # random samples tried before a unit with a minimum width takes its max


def sample_unit_choice(unit: MutableChannelUnit, kind: str = "random") -> Any:
    """A choice of ``unit`` by ``kind`` (``random``, ``max``, ``min``) that keeps at least
    ``unit.min_kept`` channels: ``min`` is the smallest such choice, ``random`` samples
    until one keeps enough (a router's experts: never fewer than its top k)."""
    if kind == "max":
        return unit.max_choice
    if unit.min_kept <= 1:
        return unit.sample_choice() if kind == "random" else unit.min_choice
    if kind == "random":
        for _ in range(_TRIES):
            choice = unit.sample_choice()
            if unit.activated_channels_for(choice) >= unit.min_kept:
                return choice
        return unit.max_choice
    ladder = sorted(getattr(unit, "candidate_choices", None) or (
        range(1, unit.num_channels + 1) if getattr(unit, "is_num_mode", True)
        else [c / unit.num_channels for c in range(1, unit.num_channels + 1)]))
    return next((c for c in ladder if unit.activated_channels_for(c) >= unit.min_kept),
                unit.max_choice)


class ChannelMutator(MutatorExtremes):
    """Choices of the channel units of a supernet built by ``fxrazor.convert``.

    Plain Python (not a module): it reads the supernet's own ``all_units``, so the units
    are neither copied nor registered twice. Keys are unit names; only mutable units
    (more than one channel, not fixed, not driven by a value mutable) are searched, while
    :meth:`set_choices` accepts every unit's name.
    """

    def __init__(self) -> None:
        self._units: nn.ModuleList | None = None

    def prepare_from_supernet(self, supernet: nn.Module) -> None:
        """Take the units of ``supernet`` (its ``all_units``)."""
        units = supernet.__dict__.get("_modules", {}).get("all_units")
        if not isinstance(units, nn.ModuleList):
            raise UnsupportedModelError(
                f"{type(supernet).__name__} has no channel units (all_units); build it "
                f"with fxrazor.convert")
        self._units = units

    @property
    def units(self) -> list[MutableChannelUnit]:
        """Every unit, single-channel and fixed ones included, in graph order."""
        if self._units is None:
            raise FxRazorError("call prepare_from_supernet first to take the units")
        return list(self._units)  # type: ignore[arg-type]

    @property
    def mutable_units(self) -> list[MutableChannelUnit]:
        """The units that are searched."""
        return [u for u in self.units if u.is_mutable]

    @property
    def search_groups(self) -> dict[str, list[MutableChannelUnit]]:
        """``{unit name: [unit]}``: each mutable unit is a group of its own."""
        return {u.name: [u] for u in self.mutable_units}

    @property
    def current_choices(self) -> dict[str, Any]:
        """``{unit name: current choice}`` for every mutable unit."""
        return {u.name: u.current_choice for u in self.mutable_units}

    @property
    def choice_template(self) -> dict[str, Any]:
        """The keys a choices dict has, with the current choices (as MMRazor)."""
        return self.current_choices

    def sample_choices(self, kind: str = "random") -> dict[str, Any]:
        """A choice per mutable unit: ``random``, ``max`` or ``min`` (not applied)."""
        check_sample_mode(kind)
        return {u.name: sample_unit_choice(u, kind) for u in self.mutable_units}

    def snapshot(self) -> list[tuple[MutableChannelUnit, Any]]:
        """Every settable unit's current choice, for :meth:`restore`."""
        return [(u, u.current_choice) for u in self.units if not u.is_fixed]

    @staticmethod
    def restore(snapshot: list[tuple[MutableChannelUnit, Any]]) -> None:
        for unit, choice in snapshot:
            unit.current_choice = choice

    def check_keys(self, choices: Mapping[str, Any]) -> None:
        """Raise :class:`UnknownUnitError` naming the valid keys if a key is no unit's."""
        names = {u.name for u in self.units}
        unknown = [k for k in choices if k not in names]
        if unknown:
            raise unknown_keys_error(unknown, list(self.current_choices), {})
        driven = [u.name for u in self.units
                  if u.name in choices and getattr(u, "driven_by", None) is not None]
        if driven:
            raise InvalidChoiceError(
                f"units {driven} follow value mutables (their width is a searched value); "
                f"set those values' keys instead")

    def set_choices(self, choices: Mapping[str, Any]) -> None:
        """Apply ``{unit name: choice}``; all or nothing (a refused choice undoes the rest)."""
        if not isinstance(choices, Mapping):
            raise InvalidChoiceError(f"choices must be a dict, got {type(choices).__name__}")
        self.check_keys(choices)
        units = {u.name: u for u in self.units}
        before = self.snapshot()
        try:
            for name, choice in choices.items():
                units[name].current_choice = choice
        except FxRazorError:
            self.restore(before)
            raise

    def fix_channel_mutables(self) -> None:
        """Fix every unit at its current choice."""
        for unit in self.units:
            unit.fix_chosen()

    def config_template(self, only_mutable_units: bool = False,
                        with_unit_init_args: bool = False,
                        with_channels: bool = False) -> dict[str, Any]:
        """The mutator's config, MMRazor's layout: ``type``, ``channel_unit_cfg`` (the unit
        class, its default args and ``units``: each unit's ``config_template``) and
        ``parse_cfg``.

        Args:
            only_mutable_units: leave out the units that are not searched.
            with_unit_init_args: add each unit's ``init_args``.
            with_channels: add each unit's member channels.
        """
        units = self.mutable_units if only_mutable_units else self.units
        unit_type = type(units[0]).__name__ if units else MutableChannelUnit.__name__
        return {
            "type": type(self).__name__,
            "channel_unit_cfg": {
                "type": unit_type,
                "default_args": {},
                "units": {u.name: u.config_template(with_init_args=with_unit_init_args,
                                                    with_channels=with_channels)
                          for u in units},
            },
            "parse_cfg": {"type": "fxrazor.convert"},
        }


class OneShotChannelMutator(ChannelMutator):
    """MMRazor's name for the channel mutator that samples ``max``/``min`` as well as
    ``random`` choices; :class:`ChannelMutator` already does all three."""
