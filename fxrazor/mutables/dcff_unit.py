"""The DCFF channel unit: filters fused by dynamic-coded filter fusion."""

from __future__ import annotations

from fxrazor.mutables.channel_unit import (
    OneShotMutableChannelUnit,
)

__all__ = ["DCFFChannelUnit"]


class DCFFChannelUnit(OneShotMutableChannelUnit):
    """A one-shot unit with a single width fixed before training (default ratio 1.0)."""

    def __init__(self, num_channels: int, candidate_choices: list[int | float] | None = None,
                 choice_mode: str = "ratio", divisor: int = 1, min_value: int = 1,
                 min_ratio: float = 0.9) -> None:
        super().__init__(num_channels, candidate_choices or [1.0], choice_mode, divisor,
                         min_value, min_ratio)
