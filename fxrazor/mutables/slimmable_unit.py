"""The slimmable channel unit: several widths trained together."""

from __future__ import annotations

from fxrazor.mutables.channel_unit import (
    OneShotMutableChannelUnit,
)

__all__ = ["SlimmableChannelUnit"]


class SlimmableChannelUnit(OneShotMutableChannelUnit):
    """A one-shot unit for slimmable training: several widths trained together.

    The candidates default to number mode. Switchable BatchNorm (one set of statistics per
    width) is not built by this engine: all widths share the sliced statistics.
    """

    def __init__(self, num_channels: int, candidate_choices: list[int | float] | None = None,
                 choice_mode: str = "number", divisor: int = 1, min_value: int = 1,
                 min_ratio: float = 0.9) -> None:
        candidates: list[int | float] = candidate_choices if candidate_choices else [num_channels] \
            if choice_mode == "number" else [1.0]
        super().__init__(num_channels, candidates, choice_mode, divisor, min_value, min_ratio)

    def alter_candidates_of_switchbn(self, candidates: list[int | float]) -> None:
        """Replace the candidate widths (all must be valid choices)."""
        fresh = OneShotMutableChannelUnit(self.num_channels, candidates, self.choice_mode)
        self.mutable_channel = fresh.mutable_channel
        self.mutable_channel.name = self.name
        self.candidate_choices = self.mutable_channel.choices
