"""The DMCP channel unit: widths learned by differentiable Markov channel pruning."""

from __future__ import annotations

from fxrazor.mutables.channel_unit import (
    SequentialMutableChannelUnit,
)

__all__ = ["DMCPChannelUnit"]


class DMCPChannelUnit(SequentialMutableChannelUnit):
    """A sequential unit in number mode with ``min_ratio=0.5`` by default."""

    def __init__(self, num_channels: int, choice_mode: str = "number", divisor: int = 1,
                 min_value: int = 1, min_ratio: float = 0.5) -> None:
        super().__init__(num_channels, choice_mode, divisor, min_value, min_ratio)
