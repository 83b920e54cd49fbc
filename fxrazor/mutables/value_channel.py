"""The channel mutable of a unit whose width follows a value mutable (an expand ratio, a
head count): see :func:`fxrazor.value_binding.bind_unit`."""

from __future__ import annotations

from collections.abc import Callable
from numbers import Real
from typing import Any

import torch

from fxrazor.errors import InvalidChoiceError
from fxrazor.mutables.base import BaseMutable
from fxrazor.mutables.mutable_channel import BaseMutableChannel

__all__ = ["ValueDrivenChannel", "width_of"]


class ValueDrivenChannel(BaseMutableChannel):
    """The channel mutable of a unit bound to a value mutable: it keeps the first
    ``driven_by.current_choice * scale`` channels (read at each use) and cannot be set.

    It reports ``is_fixed`` (the unit has no choice of its own, so its ``is_mutable`` is
    False); the unit's own rules still apply to the count (an L1 unit keeps its most
    important channels, a divisor rounds).

    Example:
        >>> from fxrazor.mutables.mutable_value import OneShotMutableValue
        >>> heads = OneShotMutableValue([2, 4])
        >>> channel = ValueDrivenChannel(4, heads, "attn.heads")
        >>> heads.current_choice = 2
        >>> channel.current_mask.tolist(), channel.is_fixed
        ([True, True, False, False], True)
    """

    driven_by: BaseMutable  # a plain attribute (see __init__)

    def __init__(self, num_channels: int, driven_by: BaseMutable, key: str, scale: int = 1,
                 choice_mode: str = "number") -> None:
        super().__init__(num_channels)
        self.__dict__["driven_by"] = driven_by  # a reference, not a submodule
        self.key, self.scale, self.choice_mode = key, scale, choice_mode

    def kept(self) -> int:
        """Channels kept now: the mutable's value times ``scale``, checked."""
        return width_of(self.driven_by.current_choice, self.scale, self.num_channels, lambda:
                      f"unit {self.name!r} ({self.num_channels} channels) driven by "
                      f"{self.driven_by!r}")

    @property
    def current_choice(self) -> int | float:
        kept = self.kept()
        return kept if self.choice_mode == "number" else kept / self.num_channels

    @current_choice.setter
    def current_choice(self, choice: Any) -> None:
        if choice != self.current_choice:
            raise InvalidChoiceError(
                f"unit {self.name!r} follows {self.driven_by!r} ({self.key}); set that "
                f"mutable's current_choice instead of the unit's")

    @property
    def current_mask(self) -> torch.Tensor:
        return torch.arange(self.num_channels) < self.kept()

    @property
    def activated_channels(self) -> int:
        return self.kept()

    @property  # type: ignore[override]
    def is_fixed(self) -> bool:
        return True

    @is_fixed.setter
    def is_fixed(self, value: bool) -> None:
        if not value:
            raise InvalidChoiceError(
                f"a unit driven by {self.driven_by!r} has no choice of its own; "
                f"unbind it to search it again")


def width_of(value: Any, scale: int, num_channels: int, where: Callable[[], str]) -> int:
    """``value * scale`` as a count of channels, checked; ``where()`` (built only on an
    error: this runs at every forward) names the unit and the mutable."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidChoiceError(f"{where()}: a width must be a number, got {value!r}")
    number: Any = value * scale  # Any: numbers.Real does not promise int() to type checkers
    if int(number) != number or not 1 <= number <= num_channels:
        shown = f"{value!r} * {scale} = {number!r}" if scale != 1 else repr(value)
        raise InvalidChoiceError(
            f"{where()}: width {shown} is not a whole number of channels in [1, "
            f"{num_channels}]; choose values within the unit")
    return int(number)
