"""A sequential mutable channel restricted to a list of candidate widths (one-shot NAS).

Example:
    >>> from fxrazor.mutables.one_shot_channel import OneShotMutableChannel
    >>> mc = OneShotMutableChannel(8, candidate_choices=[0.5, 1.0])  # ratios, kept as counts
    >>> mc.choices, mc.current_choice
    ([4, 8], 8)
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from fxrazor.errors import ChoiceTypeError, InvalidChoiceError
from fxrazor.mutables.base import DumpChosen
from fxrazor.mutables.mutable_channel import SquentialMutableChannel

__all__ = ["OneShotMutableChannel"]


class OneShotMutableChannel(SquentialMutableChannel):
    """A sequential mutable channel restricted to a list of candidate choices.

    Args:
        num_channels: the full number of channels.
        candidate_choices: the allowed choices (ints in number mode, floats in ratio
            mode), without duplicates; empty means full width only. Stored sorted.
        choice_mode: ``'number'`` or ``'ratio'``.
        **kwargs: ``alias`` and ``init_cfg``.

    The default choice is the largest candidate.

    Example:
        >>> mc = OneShotMutableChannel(8, candidate_choices=[4, 8, 2])
        >>> mc.choices, mc.current_choice, mc.min_choice
        ([2, 4, 8], 8, 2)
        >>> mc.sample_choice() in mc.choices
        True
    """

    def __init__(
        self,
        num_channels: int,
        candidate_choices: Sequence[int | float] = (),
        choice_mode: str = "number",
        **kwargs: Any,
    ) -> None:
        super().__init__(num_channels, choice_mode=choice_mode, **kwargs)
        if isinstance(candidate_choices, (str, bytes)) or not isinstance(
            candidate_choices, Sequence
        ):
            raise ChoiceTypeError(f"candidate_choices must be a list, got {candidate_choices!r}")
        candidates = [self._validate_choice(c) for c in candidate_choices]
        if len(set(candidates)) != len(candidates):
            raise InvalidChoiceError(f"candidate_choices has duplicates: {candidates}")
        self._choices = sorted(candidates) or [self._current_choice]
        self._current_choice = self._choices[-1]

    @property
    def choices(self) -> list[int | float]:
        """A sorted copy of the candidate choices."""
        return list(self._choices)

    candidate_choices = choices

    def num_choices(self) -> int:
        """Number of candidate choices (a method, as on every mutable channel)."""
        return len(self._choices)

    @property
    def min_choice(self) -> int | float:
        """The smallest candidate."""
        return self._choices[0]

    @property
    def max_choice(self) -> int | float:
        """The largest candidate."""
        return self._choices[-1]

    def sample_choice(self) -> int | float:
        """Return a candidate drawn uniformly at random (Python's ``random``)."""
        return random.choice(self._choices)

    def _extreme(self, which: str) -> int | float:
        choices = self.__dict__.get("_choices")  # None while the candidates are checked
        if not choices:
            return super()._extreme(which)
        return choices[-1] if which == "max" else choices[0]

    def _checked(self, choice: Any) -> int | float:
        value = super()._checked(choice)
        if value not in self._choices:
            raise InvalidChoiceError(
                f"{value!r} is not a candidate of {self!r}; candidates are {self._choices}"
            )
        return value

    def fix_chosen(self, chosen: Any = ...) -> None:
        """Fix at ``chosen`` (``...`` or None: the current choice); afterwards
        ``choices == [chosen]``."""
        super().fix_chosen(chosen)
        self._choices = [self._current_choice]

    def dump_chosen(self) -> DumpChosen:
        """Return the current choice with the candidates and ``max_channels`` as meta."""
        return DumpChosen(
            chosen=self._current_choice,
            meta={"all_choices": self.choices, "max_channels": self.num_channels},
        )
