"""The L1-norm channel unit: keeps the channels whose weights are largest."""

from __future__ import annotations

import torch

from fxrazor.errors import InvalidChoiceError
from fxrazor.mutables.channel_unit import (
    ChannelWeights,
    SequentialMutableChannelUnit,
)

__all__ = ["L1MutableChannelUnit"]


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
