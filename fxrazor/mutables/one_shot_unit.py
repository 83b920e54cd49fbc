"""The one-shot channel unit: a sequential unit whose width is one of a few candidates.

Example:
    >>> unit = OneShotMutableChannelUnit(8, candidate_choices=[0.25, 0.5, 1.0])
    >>> unit.sample_choice() in (0.25, 0.5, 1.0)
    True
"""

from __future__ import annotations

import random
from typing import Any

from fxrazor.mutables.channel_unit import SequentialMutableChannelUnit, _check_num_channels
from fxrazor.mutables.one_shot_channel import OneShotMutableChannel

__all__ = ["OneShotMutableChannelUnit"]


class OneShotMutableChannelUnit(SequentialMutableChannelUnit):
    """A sequential unit whose choice must be one of ``candidate_choices``.

    Example:
        >>> unit = OneShotMutableChannelUnit(8, candidate_choices=[0.25, 0.5, 1.0])
        >>> unit.current_choice, unit.min_choice
        (1.0, 0.25)
        >>> unit.current_choice = 0.5
        >>> unit.activated_channels
        4
    """

    mutable_channel: OneShotMutableChannel

    def __init__(self, num_channels: int, candidate_choices: list[int | float] | None = None,
                 choice_mode: str = "ratio", divisor: int = 1, min_value: int = 1,
                 min_ratio: float = 0.9) -> None:
        _check_num_channels(num_channels)
        candidates = [0.5, 1.0] if candidate_choices is None else list(candidate_choices)
        super().__init__(num_channels, choice_mode, divisor, min_value, min_ratio,
                         mutable_channel=OneShotMutableChannel(num_channels, candidates,
                                                               choice_mode))
        self.candidate_choices = self.mutable_channel.choices

    def init_args(self) -> dict[str, Any]:
        return {**super().init_args(), "candidate_choices": list(self.candidate_choices)}

    @property
    def min_choice(self) -> int | float:
        return self.mutable_channel.min_choice

    @property
    def max_choice(self) -> int | float:
        return self.mutable_channel.max_choice

    def sample_choice(self) -> int | float:
        return random.choice(self.candidate_choices)
