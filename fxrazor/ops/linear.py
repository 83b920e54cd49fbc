"""Dynamic Linear and Embedding layers.

Example:
    >>> import torch
    >>> from torch import nn
    >>> fc = DynamicLinear.from_static(nn.Linear(4, 3))
    >>> fc.set_selection("in", slice(0, 2))
    >>> x = torch.randn(2, 2)
    >>> torch.equal(fc(x), fc.to_static()(x))
    True
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fxrazor.ops.base import DynamicOp, count, take

__all__ = ["DynamicLinear", "DynamicEmbedding"]


class DynamicLinear(DynamicOp, nn.Linear):
    static_type = nn.Linear

    def _sliced(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        out_sel = self.selection("out")
        weight = take(take(self.weight, 0, out_sel), 1, self.selection("in"))
        return weight, take(self.bias, 0, out_sel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_full:
            return super().forward(x)
        weight, bias = self._sliced()
        return F.linear(x, weight, bias)

    def _slice_into(self, static: Any) -> None:
        weight, bias = self._sliced()
        static._parameters["weight"] = weight
        static._parameters["bias"] = bias
        static.in_features = count(self.selection("in"), self.in_features)
        static.out_features = count(self.selection("out"), self.out_features)


class DynamicEmbedding(DynamicOp, nn.Embedding):
    static_type = nn.Embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_full:
            return super().forward(x)
        weight = take(self.weight, 1, self.selection("out"))
        return F.embedding(x, weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)

    def _slice_into(self, static: Any) -> None:
        static._parameters["weight"] = take(self.weight, 1, self.selection("out"))
        static.embedding_dim = count(self.selection("out"), self.embedding_dim)
