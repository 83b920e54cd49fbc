"""Mutable values: a searchable choice among a list of values of one type.

Example:
    >>> from fxrazor.mutables.mutable_value import OneShotMutableValue
    >>> kernel = OneShotMutableValue([7, 3, 5])
    >>> kernel.choices, kernel.current_choice
    ([3, 5, 7], 7)
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from fxrazor.errors import ChoiceTypeError, FixedMutableError, InvalidChoiceError
from fxrazor.mutables.base import BaseMutable, DumpChosen
from fxrazor.mutables.derived_mutable import DerivedMethodMixin

__all__ = ["MutableValue", "OneShotMutableValue"]


def _check_value_list(value_list: Any, owner: str) -> list[Any]:
    if isinstance(value_list, (str, bytes)) or not isinstance(value_list, Sequence):
        raise ChoiceTypeError(
            f"{owner} needs a list of values, got {type(value_list).__name__}: {value_list!r}"
        )
    values = list(value_list)
    if not values:
        raise InvalidChoiceError(f"{owner} needs at least one value, got an empty list")
    types_seen = {type(v) for v in values}
    if len(types_seen) > 1:
        names = ", ".join(sorted(t.__name__ for t in types_seen))
        raise ChoiceTypeError(
            f"all values of {owner} must have one type, got {names} in {values!r}"
        )
    for i, v in enumerate(values):
        if v in values[:i]:
            raise InvalidChoiceError(f"{owner} got the value {v!r} twice in {values!r}")
    return values


class MutableValue(BaseMutable, DerivedMethodMixin):
    """A choice among ``value_list``, whose values all have one type.

    ``m * k``, ``k * m`` and ``m // k`` give :class:`DerivedMutable` objects whose choice
    follows ``current_choice * k`` and ``current_choice // k``.

    Args:
        value_list: the candidate values, all of one type, without duplicates.
        default_value: the initial choice; one of ``value_list``. Defaults to the first.
        alias: an optional name shared by mutables that are searched together.
        init_cfg: accepted for signature compatibility; stored, not interpreted.

    Example:
        >>> mv = MutableValue([3, 5, 7], default_value=5)
        >>> mv.current_choice = 7
        >>> mv.dump_chosen()
        DumpChosen(chosen=7, meta={'all_choices': [3, 5, 7]})
        >>> mv.fix_chosen(7)
        >>> mv.choices, mv.is_fixed
        ([7], True)
    """

    mutable_prefix = "value"

    def __init__(
        self,
        value_list: Sequence[Any],
        default_value: Any = None,
        alias: str | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(alias=alias, init_cfg=init_cfg)
        self._choices = _check_value_list(value_list, type(self).__name__)
        if default_value is None:
            default_value = self._default_choice()
        self._current_choice = self._canonical(default_value, what="default_value")

    def _default_choice(self) -> Any:
        return self._choices[0]

    def _canonical(self, choice: Any, what: str = "choice") -> Any:
        """Return the element of ``choices`` equal to ``choice`` or raise naming them."""
        value_type = type(self._choices[0])
        # bool == int in Python; keep True from silently meaning 1 (and vice versa).
        if isinstance(choice, bool) != (value_type is bool):
            raise ChoiceTypeError(
                f"{what} {choice!r} of {type(self).__name__} must be a {value_type.__name__}; "
                f"valid choices are {self._choices}"
            )
        for value in self._choices:
            if value == choice:
                return value
        raise InvalidChoiceError(
            f"{what} {choice!r} is not a choice of {type(self).__name__}; "
            f"valid choices are {self._choices}"
        )

    @property
    def choices(self) -> list[Any]:
        """A copy of the list of valid choices."""
        return list(self._choices)

    @property
    def num_choices(self) -> int:
        """Number of valid choices."""
        return len(self._choices)

    @property
    def current_choice(self) -> Any:
        """The value chosen now."""
        return self._current_choice

    @current_choice.setter
    def current_choice(self, choice: Any) -> None:
        if self.is_fixed and not self._equals_current(choice):
            raise FixedMutableError(
                f"{type(self).__name__} is fixed to {self._current_choice!r}; "
                f"cannot set it to {choice!r}"
            )
        self._current_choice = self._canonical(choice)

    def _equals_current(self, choice: Any) -> bool:
        return isinstance(choice, bool) == isinstance(self._current_choice, bool) and (
            choice == self._current_choice
        )

    def fix_chosen(self, chosen: Any) -> None:
        """Fix the value to ``chosen``; afterwards ``choices == [chosen]``.

        Fixing again to the same value does nothing; to another value it raises
        :class:`FixedMutableError`.
        """
        if self.is_fixed:
            if self._equals_current(chosen):
                return
            raise FixedMutableError(
                f"{type(self).__name__} is already fixed to {self._current_choice!r}; "
                f"cannot fix it to {chosen!r}"
            )
        chosen = self._canonical(chosen, what="chosen")
        self._current_choice = chosen
        self._choices = [chosen]
        self.is_fixed = True

    def dump_chosen(self) -> DumpChosen:
        """Return the current choice with ``meta={'all_choices': choices}``."""
        return DumpChosen(chosen=self._current_choice, meta={"all_choices": self.choices})

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(choices={self._choices}, "
            f"current_choice={self._current_choice!r}, is_fixed={self.is_fixed})"
        )


class OneShotMutableValue(MutableValue):
    """A mutable value with sorted choices, random sampling and min/max choices.

    The choices are sorted ascending and the default choice is the largest one.

    Example:
        >>> import random
        >>> random.seed(0)
        >>> mv = OneShotMutableValue([4, 2, 6])
        >>> mv.choices, mv.current_choice, mv.min_choice, mv.max_choice
        ([2, 4, 6], 6, 2, 6)
        >>> mv.sample_choice() in mv.choices
        True
    """

    def __init__(
        self,
        value_list: Sequence[Any],
        default_value: Any = None,
        alias: str | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        values = _check_value_list(value_list, type(self).__name__)
        try:
            values = sorted(values)
        except TypeError as e:
            raise ChoiceTypeError(
                f"{type(self).__name__} needs values that can be ordered, got {values!r}"
            ) from e
        super().__init__(values, default_value=default_value, alias=alias, init_cfg=init_cfg)

    def _default_choice(self) -> Any:
        return self._choices[-1]

    def sample_choice(self) -> Any:
        """Return a choice drawn uniformly at random (Python's ``random``)."""
        return random.choice(self._choices)

    @property
    def min_choice(self) -> Any:
        """The smallest choice."""
        return self._choices[0]

    @property
    def max_choice(self) -> Any:
        """The largest choice."""
        return self._choices[-1]
