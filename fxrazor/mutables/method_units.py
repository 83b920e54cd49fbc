"""Channel units of specific pruning methods: L1-norm, slimmable, DCFF and DMCP.

Example:
    >>> import torch
    >>> unit = L1MutableChannelUnit(4)
    >>> unit.set_importance(torch.tensor([0.1, 3.0, 2.0, 0.5]))
    >>> unit.current_choice = 2
    >>> unit.current_mask.tolist()
    [False, True, True, False]
"""

from __future__ import annotations

import torch

from fxrazor.errors import InvalidChoiceError
from fxrazor.mutables.channel_unit import (
    ChannelWeights,
    OneShotMutableChannelUnit,
    SequentialMutableChannelUnit,
)

__all__ = ["L1MutableChannelUnit", "SlimmableChannelUnit", "DCFFChannelUnit", "DMCPChannelUnit"]


class L1MutableChannelUnit(SequentialMutableChannelUnit):
    """Keeps the channels whose producing weights have the largest L1 norm.

    The importance of a channel is the sum of the absolute weights that create it, over the
    unit's producing layers and parameters (a conv's filter, a linear layer's row, an
    embedding's column; biases not counted), as in Li et al., "Pruning Filters for
    Efficient ConvNets" (arXiv 1608.08710). ``fxrazor.convert`` hands the weights to
    :meth:`prepare_from_weights`; ties keep the lower index.
    """

    def __init__(self, num_channels: int, choice_mode: str = "number", divisor: int = 1,
                 min_value: int = 1, min_ratio: float = 0.9) -> None:
        super().__init__(num_channels, choice_mode, divisor, min_value, min_ratio)
        self.register_buffer("importance", torch.zeros(num_channels), persistent=False)

    def prepare_from_weights(self, weights: ChannelWeights) -> None:
        """Set the importance from the weights that produce the unit's channels."""
        score = torch.zeros(self.num_channels)
        for producer in weights.producers(with_bias=False):
            weight, dim = producer.weight, producer.dim
            if weight is None or weight.is_meta:  # nothing to rank by (a model on meta)
                continue
            per_position = weight.detach().abs().float().transpose(0, dim) \
                .reshape(weight.shape[dim], -1).sum(1).cpu()
            score += per_position[torch.from_numpy(producer.positions)].sum(1)
        self.set_importance(score)

    def set_importance(self, importance: torch.Tensor) -> None:
        if importance.shape != (self.num_channels,):
            raise InvalidChoiceError(
                f"unit {self.name!r}: importance must have shape ({self.num_channels},), "
                f"got {tuple(importance.shape)}"
            )
        self.importance = importance.detach().float().cpu()

    @property
    def current_mask(self) -> torch.Tensor:
        k = self.kept_count()
        # stable sort on -importance keeps the lower index among equal scores
        order = torch.sort(-self.importance, stable=True).indices
        mask = torch.zeros(self.num_channels, dtype=torch.bool)
        mask[order[:k]] = True
        return mask


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


class DCFFChannelUnit(OneShotMutableChannelUnit):
    """A one-shot unit with a single width fixed before training (default ratio 1.0)."""

    def __init__(self, num_channels: int, candidate_choices: list[int | float] | None = None,
                 choice_mode: str = "ratio", divisor: int = 1, min_value: int = 1,
                 min_ratio: float = 0.9) -> None:
        super().__init__(num_channels, candidate_choices or [1.0], choice_mode, divisor,
                         min_value, min_ratio)


class DMCPChannelUnit(SequentialMutableChannelUnit):
    """A sequential unit in number mode with ``min_ratio=0.5`` by default."""

    def __init__(self, num_channels: int, choice_mode: str = "number", divisor: int = 1,
                 min_value: int = 1, min_ratio: float = 0.5) -> None:
        super().__init__(num_channels, choice_mode, divisor, min_value, min_ratio)
