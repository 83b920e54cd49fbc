"""Channel units: groups of channels, across layers, that are kept or pruned together.

A unit is what the analysis finds (``fxrazor.convert``) and what a search or criterion
chooses a width for. Its ``current_mask`` (True = kept) selects channels in every member
layer; ``config_template`` describes it, members included, in a plain dict.

Example:
    >>> unit = SequentialMutableChannelUnit(8)
    >>> unit.current_choice = 3
    >>> unit.current_mask.tolist()
    [True, True, True, False, False, False, False, False]
    >>> unit.config_template(with_init_args=True)["init_args"]["choice_mode"]
    'number'
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch
from torch import nn

from fxrazor.errors import InvalidChoiceError, SubnetConfigError
from fxrazor.mutables.base import LightModule
from fxrazor.mutables.mutable_channel import (
    BaseMutableChannel,
    SquentialMutableChannel,
)
from fxrazor.utils import make_divisible

__all__ = [
    "MutableChannelUnit",
    "SequentialMutableChannelUnit",
    "ChannelSpec",
    "ChannelSpecs",
    "ChannelWeights",
]

ChannelSpec = dict[str, Any]  # name, start, end, expand_ratio, is_output_channel[, index]
ChannelSpecs = tuple[list[ChannelSpec], list[ChannelSpec]]  # (output_related, input_related)


class _Producer(Protocol):
    @property
    def weight(self) -> torch.Tensor: ...
    @property
    def dim(self) -> int: ...
    @property
    def positions(self) -> Any: ...  # a (num_channels, r) integer array


class ChannelWeights(Protocol):
    """What a unit is given to rank its channels by weights (``fxrazor.layers.UnitWeights``):
    per tensor that creates the unit's channels, the tensor, the dim holding them and where
    each unit channel sits along it."""

    def producers(self, with_bias: bool = True) -> Iterable[_Producer]: ...


def _check_num_channels(num_channels: Any) -> None:
    if not isinstance(num_channels, int) or isinstance(num_channels, bool) \
            or num_channels < 1:
        raise InvalidChoiceError(f"num_channels must be a positive int, got {num_channels!r}")


class MutableChannelUnit(LightModule):
    """Base class of channel units.

    Args:
        num_channels: how many channels the unit has.
        mutable_channel: the channel mutable the unit drives (``num_channels`` wide); a
            new :class:`SquentialMutableChannel` when not given.

    Attributes:
        name: the unit's name (set by the analysis; ``'unbind'`` until then).
        output_related / input_related: member channel specs (see ``config_template``).
        min_kept: the fewest channels a choice may keep (set by the analysis where an op
            needs them, a router's top-k experts: a choice below it is refused);
            ``min_kept_reason`` says which op.
    """

    min_kept: int = 1
    min_kept_reason: str = ""

    def __init__(self, num_channels: int, *, mutable_channel: BaseMutableChannel | None = None,
                 **kwargs: Any) -> None:
        super().__init__()
        _check_num_channels(num_channels)
        self.num_channels = num_channels
        self._name = "unbind"
        self._related: ChannelSpecs | Callable[[], ChannelSpecs] = ([], [])
        if mutable_channel is None:
            mutable_channel = SquentialMutableChannel(num_channels)
        elif mutable_channel.num_channels != num_channels:
            raise InvalidChoiceError(
                f"mutable_channel has {mutable_channel.num_channels} channels, the unit "
                f"{num_channels}")
        self.mutable_channel: SquentialMutableChannel = mutable_channel  # type: ignore[assignment]

    # ---- member channel specs -----------------------------------------------------------------
    @property
    def output_related(self) -> list[ChannelSpec]:
        """Channel specs of the members whose output channels the unit covers."""
        return self._channel_specs()[0]

    @output_related.setter
    def output_related(self, specs: list[ChannelSpec]) -> None:
        self._related = (specs, self.input_related)

    @property
    def input_related(self) -> list[ChannelSpec]:
        """Channel specs of the members whose input channels the unit covers."""
        return self._channel_specs()[1]

    @input_related.setter
    def input_related(self, specs: list[ChannelSpec]) -> None:
        self._related = (self.output_related, specs)

    def set_channel_specs_source(self, source: Callable[[], ChannelSpecs]) -> None:
        """Give ``(output_related, input_related)`` as a function, called on first use.

        ``convert`` builds many units whose specs (a list of positions per member layer)
        most workflows never read; this defers building them.

        Example:
            >>> unit = MutableChannelUnit(2)
            >>> unit.set_channel_specs_source(lambda: ([{"name": "conv"}], []))
            >>> unit.output_related
            [{'name': 'conv'}]
        """
        self.__dict__["_related"] = source  # (a plain attribute: skip nn.Module's checks)

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "_related" not in state:  # pickled when the specs were plain attributes
            state = dict(state)
            state["_related"] = (state.pop("output_related", []), state.pop("input_related", []))
        super().__setstate__(state)

    def _channel_specs(self) -> ChannelSpecs:
        if callable(self._related):
            self._related = self._related()
        return self._related

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value
        self.mutable_channel.name = value

    # ---- choices ------------------------------------------------------------------------------
    @property
    def current_choice(self) -> Any:
        """The unit's width choice (a count or a ratio, by ``choice_mode``)."""
        return self.mutable_channel.current_choice

    @current_choice.setter
    def current_choice(self, choice: Any) -> None:
        if self.min_kept > 1:
            before = self.mutable_channel.current_choice
            self.mutable_channel.current_choice = choice
            if self.activated_channels < self.min_kept:
                self.mutable_channel.current_choice = before
                raise InvalidChoiceError(
                    f"unit {self.name!r}: choice {choice!r} keeps "
                    f"{self.activated_channels_for(choice)} of {self.num_channels} channels, "
                    f"but {self.min_kept_reason or 'the model'} needs at least {self.min_kept}")
        else:
            self.mutable_channel.current_choice = choice
        self._choice_set()

    def activated_channels_for(self, choice: Any) -> int:
        """How many channels ``choice`` keeps (applied for a moment, then undone)."""
        before = self.mutable_channel.current_choice
        self.mutable_channel.current_choice = choice
        try:
            return self.activated_channels
        finally:
            self.mutable_channel.current_choice = before

    def _choice_set(self) -> None:
        """Called after every width set through the unit: a unit whose state follows the
        width (L1's ranking, DMCP's sample mode) updates it here."""

    @property
    def current_mask(self) -> torch.Tensor:
        """Bool tensor of ``num_channels``; True marks a kept channel."""
        return self.mutable_channel.current_mask

    @property
    def activated_channels(self) -> int:
        return int(self.current_mask.sum())

    def sample_choice(self) -> Any:
        """A random valid choice (not applied)."""
        raise NotImplementedError

    def fix_chosen(self, choice: Any = None) -> None:
        """Fix the unit at ``choice`` (or its current choice); it can no longer change."""
        if choice is not None:
            self.current_choice = choice
        self.mutable_channel.fix_chosen()

    @property
    def is_fixed(self) -> bool:
        return self.mutable_channel.is_fixed

    @property
    def is_mutable(self) -> bool:
        """Whether the unit can still be pruned: not fixed and more than one channel."""
        return not self.is_fixed and self.num_channels > 1

    @property
    def mutable_prefix(self) -> str:
        return "channel"

    # ---- configs ------------------------------------------------------------------------------
    def init_args(self) -> dict[str, Any]:
        return {"num_channels": self.num_channels}

    def config_template(self, with_init_args: bool = False,
                        with_channels: bool = False) -> dict[str, Any]:
        """Describe the unit: ``choice``, plus ``init_args`` and ``channels`` on request.

        ``channels`` has ``input_related`` and ``output_related`` lists; each entry names a
        layer (``name``), the range ``[start, end)`` of its dimension that the unit covers,
        ``expand_ratio`` (positions per unit channel) and ``is_output_channel``. Members
        whose positions are not one contiguous block also carry ``index``, the positions of
        each unit channel.
        """
        config: dict[str, Any] = {}
        if with_init_args:
            config["init_args"] = self.init_args()
        config["choice"] = _plain(self.current_choice)
        if with_channels:
            config["channels"] = {
                "input_related": [dict(c) for c in self.input_related],
                "output_related": [dict(c) for c in self.output_related],
            }
        return config

    @classmethod
    def init_from_cfg(cls, model: nn.Module, config: dict[str, Any]) -> MutableChannelUnit:
        """Build a unit from ``config_template(with_init_args=True, with_channels=True)``;
        member layer names are checked against ``model``."""
        unit = cls(**config.get("init_args", {}))
        channels = config.get("channels", {})
        names = _layer_names(model)
        for key in ("input_related", "output_related"):
            for spec in channels.get(key, []):
                if _base(spec["name"]) not in names:
                    raise SubnetConfigError(
                        f"unit config names layer {spec['name']!r}, which the model lacks"
                    )
            setattr(unit, key, [dict(s) for s in channels.get(key, [])])
        if "choice" in config:
            unit.current_choice = config["choice"]
        return unit

    @classmethod
    def init_from_predefined_model(cls, model: nn.Module) -> list[MutableChannelUnit]:
        """The units of a supernet built by ``fxrazor.convert``, re-created as ``cls``."""
        units = getattr(model, "all_units", None)
        if units is None:
            raise SubnetConfigError(
                f"{type(model).__name__} has no channel units; build it with fxrazor.convert"
            )
        made = []
        for old in units:
            unit = cls(old.num_channels)
            unit.name = old.name
            unit.output_related, unit.input_related = old.output_related, old.input_related
            made.append(unit)
        return made

    def prepare_from_weights(self, weights: ChannelWeights) -> None:
        """Hook called by ``fxrazor.convert`` once per unit, after the supernet is built,
        with the weights that produce the unit's channels. A unit whose choice of channels
        depends on the weights (L1 norm) reads them here; the base keeps first-k order and
        ignores them. Reading is lazy: a unit that does not ask costs nothing."""

    def prepare_for_pruning(self, model: nn.Module) -> None:
        """Check that every member layer exists in ``model`` (a supernet)."""
        names = _layer_names(model)
        missing = [c["name"] for c in self.output_related + self.input_related
                   if _base(c["name"]) not in names]
        if missing:
            raise SubnetConfigError(f"unit {self.name!r}: layers {missing} are not in the model")

    def extra_repr(self) -> str:
        return f"name={self.name}, num_channels={self.num_channels}, choice={self.current_choice}"


class SequentialMutableChannelUnit(MutableChannelUnit):
    """Keeps the first k channels (like ``11110000``); a choice is a count or a ratio.

    Args:
        num_channels: number of channels.
        choice_mode: ``'number'`` (an int in [1, num_channels]) or ``'ratio'`` (in (0, 1]).
        divisor, min_value, min_ratio: the kept count is rounded with ``make_divisible``.
        mutable_channel: the channel mutable (a subclass passes its own); by default a
            :class:`SquentialMutableChannel` in ``choice_mode``.

    Example:
        >>> unit = SequentialMutableChannelUnit(10, choice_mode="ratio", divisor=4)
        >>> unit.current_choice = 0.5  # 5 channels; 4 would lose over 10%, so 8
        >>> unit.activated_channels
        8
    """

    def __init__(self, num_channels: int, choice_mode: str = "number", divisor: int = 1,
                 min_value: int = 1, min_ratio: float = 0.9, *,
                 mutable_channel: BaseMutableChannel | None = None) -> None:
        if mutable_channel is None:
            _check_num_channels(num_channels)  # the unit's own error, before the channel's
            mutable_channel = SquentialMutableChannel(num_channels, choice_mode=choice_mode)
        elif getattr(mutable_channel, "choice_mode", choice_mode) != choice_mode:
            raise InvalidChoiceError(
                f"mutable_channel is in {mutable_channel.choice_mode!r} mode, the unit in "
                f"{choice_mode!r}")
        super().__init__(num_channels, mutable_channel=mutable_channel)
        self.choice_mode = choice_mode
        self.divisor, self.min_value, self.min_ratio = divisor, min_value, min_ratio

    def init_args(self) -> dict[str, Any]:
        return {"num_channels": self.num_channels, "choice_mode": self.choice_mode,
                "divisor": self.divisor, "min_value": self.min_value,
                "min_ratio": self.min_ratio}

    @property
    def is_num_mode(self) -> bool:
        return self.choice_mode == "number"

    def kept_count(self) -> int:
        """Channels kept by the current choice, after rounding to the divisor."""
        return self._rounded(self.mutable_channel.activated_channels)

    def activated_channels_for(self, choice: Any) -> int:
        """How many channels ``choice`` keeps: the mutable channel's count (checked, not
        applied), rounded as :meth:`kept_count` rounds it; every sequential unit's mask
        keeps ``kept_count()`` channels, whichever they are."""
        kept_for = getattr(self.mutable_channel, "kept_for", None)
        if kept_for is None:  # a mutable channel put in by hand: apply and undo
            return super().activated_channels_for(choice)
        return self._rounded(kept_for(choice))

    def _rounded(self, count: int) -> int:
        if self.divisor > 1:
            count = make_divisible(count, self.divisor, self.min_value, self.min_ratio)
        return max(1, min(self.num_channels, count))

    @property
    def current_mask(self) -> torch.Tensor:
        mask = torch.zeros(self.num_channels, dtype=torch.bool)
        mask[: self.kept_count()] = True
        return mask

    @property
    def min_choice(self) -> int | float:
        return 1 if self.is_num_mode else 1 / self.num_channels

    @property
    def max_choice(self) -> int | float:
        return self.num_channels if self.is_num_mode else 1.0

    def sample_choice(self) -> int | float:
        count = random.randint(1, self.num_channels)
        return count if self.is_num_mode else count / self.num_channels


def _base(name: str) -> str:
    """The layer or parameter path of a member name (``pos_embedding:dim2`` → parameter)."""
    return name.split(":", 1)[0]


def _layer_names(model: nn.Module) -> set[str]:
    """Paths of the layers, parameters and buffers of a model or of a supernet's graph."""
    root = getattr(model, "graph_module", model)
    return ({n for n, _ in root.named_modules()}
            | {n for n, _ in root.named_parameters(remove_duplicate=False)}
            | {n for n, _ in root.named_buffers(remove_duplicate=False)})


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value
