"""Mutable channels: searchable bool masks that say which channels a dynamic op keeps.

Example:
    >>> from fxrazor.mutables.mutable_channel import SquentialMutableChannel
    >>> mc = SquentialMutableChannel(num_channels=4)
    >>> mc.current_choice = 3
    >>> mc.current_mask.tolist(), mc.activated_channels
    ([True, True, True, False], 3)
"""

from __future__ import annotations

import math
from abc import abstractmethod
from numbers import Integral, Real
from typing import Any

import torch

from fxrazor.errors import ChoiceTypeError, FixedMutableError, InvalidChoiceError
from fxrazor.mutables.base import BaseMutable, DumpChosen
from fxrazor.mutables.derived_mutable import DerivedMethodMixin, DerivedMutable

__all__ = [
    "BaseMutableChannel",
    "SimpleMutableChannel",
    "SquentialMutableChannel",
    "SequentialMutableChannel",
]


def _same_choice(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    return type(a) is type(b) and a == b


class BaseMutableChannel(BaseMutable, DerivedMethodMixin):
    """A mutable whose choice selects channels through a bool ``current_mask``.

    Subclasses implement ``current_choice`` and ``current_mask``. ``m * k`` and ``m // k``
    give derived mutables (see :class:`~fxrazor.mutables.derived_mutable.DerivedMethodMixin`).

    Args:
        num_channels: the full number of channels (length of the mask).
        **kwargs: ``alias`` and ``init_cfg``, as for every mutable.

    Attributes:
        name: a label for messages and reprs; ``'unbind'`` until someone names it.

    Example:
        >>> from fxrazor.mutables.mutable_channel import SquentialMutableChannel
        >>> mc = SquentialMutableChannel(num_channels=3)
        >>> mc.fix_chosen(2)
        >>> mc.is_fixed, mc.dump_chosen().chosen
        (True, 2)
    """

    mutable_prefix = "channel"
    num_channels: int
    name: str

    def __init__(self, num_channels: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(num_channels, bool) or not isinstance(num_channels, Integral):
            raise ChoiceTypeError(
                f"num_channels of {type(self).__name__} must be an int, got {num_channels!r}"
            )
        if num_channels < 1:
            raise InvalidChoiceError(
                f"num_channels of {type(self).__name__} must be positive, got {num_channels}"
            )
        self.num_channels = int(num_channels)
        self.name = "unbind"

    @property
    @abstractmethod
    def current_mask(self) -> torch.Tensor:
        """A bool tensor of length ``num_channels``; True marks a kept channel."""

    @property
    def activated_channels(self) -> int:
        """Number of kept channels (True entries of ``current_mask``)."""
        return int(self.current_mask.sum())

    def num_choices(self) -> int:
        """Number of available choices; 1 unless a subclass limits the candidates.

        A method, not a property, as MMRazor's ``BaseMutableChannel.num_choices()``
        (mutable values, modules and derived mutables have it as a property there and
        here).
        """
        return 1

    def _check_not_fixed(self, choice: Any) -> None:
        """Raise if the mutable is fixed and ``choice`` differs from the fixed choice."""
        if self.is_fixed and not _same_choice(choice, self.current_choice):
            raise FixedMutableError(f"{self!r} is fixed; cannot change its choice to {choice!r}")

    def fix_chosen(self, chosen: Any = None) -> None:
        """Fix the mutable at ``chosen`` (at the current choice when None).

        Fixing a fixed mutable again is a no-op for None or the fixed choice and raises
        :class:`FixedMutableError` for any other choice.
        """
        if self.is_fixed:
            self._check_not_fixed(self.current_choice if chosen is None else chosen)
            return
        if chosen is not None:
            self.current_choice = chosen
        self.is_fixed = True

    def dump_chosen(self) -> DumpChosen:
        """Return the current choice with ``meta={'max_channels': num_channels}`` (MMRazor's
        meta key)."""
        return DumpChosen(chosen=self.current_choice, meta={"max_channels": self.num_channels})

    def _repr_choice(self) -> str:
        return f"current_choice={self.current_choice}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name}, num_channels={self.num_channels}, "
            f"{self._repr_choice()})"
        )


class SimpleMutableChannel(BaseMutableChannel):
    """A mutable channel whose choice is the mask itself (any pattern, all True at first).

    Example:
        >>> import torch
        >>> mc = SimpleMutableChannel(3)
        >>> mc.current_choice = torch.tensor([True, False, True])
        >>> mc.expand_mutable_channel(2).current_mask.tolist()
        [True, True, False, False, True, True]
    """

    def __init__(self, num_channels: int, **kwargs: Any) -> None:
        super().__init__(num_channels, **kwargs)
        self.mask = torch.ones(self.num_channels, dtype=torch.bool)

    @property
    def current_choice(self) -> torch.Tensor:
        """The mask chosen now (a bool tensor of length ``num_channels``)."""
        return self.mask

    @current_choice.setter
    def current_choice(self, choice: torch.Tensor) -> None:
        if not isinstance(choice, torch.Tensor) or choice.dtype != torch.bool:
            raise ChoiceTypeError(
                f"the choice of {type(self).__name__} is a bool mask tensor, got {choice!r}"
            )
        if choice.shape != (self.num_channels,):
            raise InvalidChoiceError(
                f"the mask of {self!r} must have shape ({self.num_channels},), "
                f"got {tuple(choice.shape)}"
            )
        self._check_not_fixed(choice)
        self.mask = choice.detach().clone()

    @property
    def current_mask(self) -> torch.Tensor:
        """The mask chosen now."""
        return self.mask

    def expand_mutable_channel(self, expand_ratio: int | float) -> DerivedMutable:
        """Derive a mutable whose mask (and choice) repeats every entry ``expand_ratio`` times."""
        if isinstance(expand_ratio, bool) or not isinstance(expand_ratio, Real):
            raise ChoiceTypeError(f"expand_ratio must be a positive integer, got {expand_ratio!r}")
        if expand_ratio < 1 or int(expand_ratio) != expand_ratio:
            raise InvalidChoiceError(
                f"expand_ratio must be a positive integer, got {expand_ratio!r}"
            )
        ratio = int(expand_ratio)

        def mask_fn() -> torch.Tensor:
            return self.current_mask.repeat_interleave(ratio)

        return DerivedMutable(choice_fn=mask_fn, mask_fn=mask_fn)

    def _repr_choice(self) -> str:
        return f"activated_channels={self.activated_channels}"


class SquentialMutableChannel(BaseMutableChannel):
    """A mutable channel that keeps the first channels, like ``11110000``.

    A choice is a count (an int in ``[1, num_channels]``), a ratio (a float in ``(0, 1]``:
    ratio ``r`` keeps ``floor(r * num_channels + 0.5)`` channels, rounded half up, at least
    one), or ``'max'`` / ``'min'``, in either mode, as the reference unit takes an integer
    or a float: an int is always a count and a float always a ratio (so ``1`` is one
    channel, ``1.0`` all of them). The mode sets the form the choice is stored and
    reported in: ``'number'`` keeps counts, ``'ratio'`` ratios (a count ``k`` becomes
    ``k / num_channels``). The default choice is full width.

    Args:
        num_channels: the full number of channels.
        choice_mode: ``'number'`` or ``'ratio'``.
        **kwargs: ``alias`` and ``init_cfg``.

    Example:
        >>> mc = SquentialMutableChannel(num_channels=4, choice_mode='ratio')
        >>> mc.current_choice
        1.0
        >>> mc.current_choice = 0.5
        >>> mc.current_mask.tolist()
        [True, True, False, False]
        >>> mc.current_choice = 3  # a count, stored as a ratio in this mode
        >>> mc.current_choice, mc.activated_channels
        (0.75, 3)
    """

    def __init__(self, num_channels: int, choice_mode: str = "number", **kwargs: Any) -> None:
        super().__init__(num_channels, **kwargs)
        if choice_mode not in ("number", "ratio"):
            raise InvalidChoiceError(
                f"choice_mode must be 'number' or 'ratio', got {choice_mode!r}"
            )
        self.choice_mode = choice_mode
        self._current_choice: int | float = self.num_channels if self.is_num_mode else 1.0

    @property
    def is_num_mode(self) -> bool:
        """Whether choices are numbers of channels (else ratios of ``num_channels``)."""
        return self.choice_mode == "number"

    def _validate_choice(self, choice: Any) -> int | float:
        """Return ``choice`` as an int (number mode) or float (ratio mode), or raise."""
        if self.is_num_mode:
            if type(choice) is int and 1 <= choice <= self.num_channels:
                return choice  # the common case, before the slower checks below
        elif type(choice) is float and 0.0 < choice <= 1.0:
            return choice
        return self._converted(choice)

    def _converted(self, choice: Any) -> int | float:
        """A choice given in the other form, or ``'max'`` / ``'min'``, in this mode's form."""
        n = self.num_channels
        where = f"{type(self).__name__} '{self.name}' ({self.choice_mode} mode)"
        forms = (f"a count (an int in [1, {n}]), a ratio (a float in (0, 1]), 'max' or "
                 "'min'")
        if isinstance(choice, str) and choice in ("max", "min"):
            return self._extreme(choice)
        value: Any = choice  # Any: numbers.Integral/Real do not promise comparisons to mypy
        if isinstance(choice, bool) or not isinstance(choice, Real):
            raise ChoiceTypeError(f"a choice of {where} is {forms}; got {choice!r}")
        if isinstance(choice, Integral):
            if not 1 <= value <= n:
                raise InvalidChoiceError(
                    f"a choice of {where} is {forms}; the count {choice} is out of range")
            return int(value) if self.is_num_mode else int(value) / n
        if not 0.0 < value <= 1.0:
            raise InvalidChoiceError(
                f"a choice of {where} is {forms}; got {choice}: a float is a ratio (for a "
                "count of channels pass an int)")
        return max(1, math.floor(value * n + 0.5)) if self.is_num_mode else float(value)

    def _extreme(self, which: str) -> int | float:
        """The largest (``'max'``) or smallest (``'min'``) choice, in this mode's form."""
        if which == "max":
            return self.num_channels if self.is_num_mode else 1.0
        return 1 if self.is_num_mode else 1 / self.num_channels

    @property
    def current_choice(self) -> int | float:
        """The number (or ratio) of channels kept now."""
        return self._current_choice

    @current_choice.setter
    def current_choice(self, choice: int | float) -> None:
        self._current_choice = self._checked(choice)

    def _checked(self, choice: Any) -> int | float:
        """``choice`` validated (as an int or a float), or raise."""
        value = self._validate_choice(choice)
        self._check_not_fixed(value)
        return value

    def _kept(self) -> int:
        return self._kept_of(self._current_choice)

    def _kept_of(self, choice: int | float) -> int:
        if self.is_num_mode:
            return int(choice)
        return max(1, math.floor(choice * self.num_channels + 0.5))

    def kept_for(self, choice: Any) -> int:
        """The channels ``choice`` would keep, checked as setting it checks it, without
        setting it (estimates ask this for many choices; a set and undo costs ~10x more).

        Example:
            >>> SquentialMutableChannel(8, choice_mode="ratio").kept_for(0.3)
            2
        """
        return self._kept_of(self._checked(choice))

    @property
    def current_mask(self) -> torch.Tensor:
        """The first ``activated_channels`` entries True, the rest False."""
        return torch.arange(self.num_channels) < self._kept()

    @property
    def activated_channels(self) -> int:
        """Number of kept channels."""
        return self._kept()

    def fix_chosen(self, chosen: Any = ...) -> None:
        """Fix the mutable at ``chosen``; ``...`` (the default, as in MMRazor) or None
        fixes it at the current choice.

        Example:
            >>> mc = SquentialMutableChannel(4)
            >>> mc.current_choice = 3
            >>> mc.fix_chosen()
            >>> mc.is_fixed, mc.current_choice
            (True, 3)
        """
        super().fix_chosen(None if chosen is ... else chosen)


SequentialMutableChannel = SquentialMutableChannel
