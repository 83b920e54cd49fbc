"""Dynamic normalisation layers: BatchNorm, InstanceNorm, GroupNorm, LayerNorm.

Running statistics are sliced for the forward and, in training, written back to the kept
positions, so a supernet trained at any width keeps one set of statistics.

Example:
    >>> import torch
    >>> from torch import nn
    >>> bn = DynamicBatchNorm2d.from_static(nn.BatchNorm2d(4).eval())
    >>> bn.set_selection("channels", torch.tensor([1, 3]))
    >>> x = torch.randn(2, 2, 3, 3)
    >>> torch.equal(bn(x), bn.to_static()(x))
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from fxrazor.ops.base import DynamicOp, count, take

if TYPE_CHECKING:  # the mixins are only ever combined with these layer types
    _NormBase = nn.modules.batchnorm._NormBase
else:
    _NormBase = object

__all__ = [
    "DynamicBatchNorm1d", "DynamicBatchNorm2d", "DynamicBatchNorm3d", "DynamicSyncBatchNorm",
    "DynamicInstanceNorm1d", "DynamicInstanceNorm2d", "DynamicInstanceNorm3d",
    "DynamicGroupNorm", "DynamicLayerNorm", "DynamicRMSNorm",
]


class _ChannelNormMixin(DynamicOp, _NormBase):
    """Shared slicing of per-channel parameters and running statistics."""


    def _slice_into(self, static: Any) -> None:
        sel = self.selection("channels")
        for name in ("weight", "bias"):
            static._parameters[name] = take(self._parameters.get(name), 0, sel)
        for name in ("running_mean", "running_var"):
            if self._buffers.get(name) is not None:
                static._buffers[name] = take(self._buffers[name], 0, sel)
        static.num_features = count(sel, self.num_features)

    def _momentum(self) -> float:
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                return 1.0 / float(self.num_batches_tracked)
        return 0.0 if self.momentum is None else self.momentum

    def _stats(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        sel = self.selection("channels")
        return take(self.running_mean, 0, sel), take(self.running_var, 0, sel)

    def _write_back(self, mean: torch.Tensor | None, var: torch.Tensor | None) -> None:
        sel = self.selection("channels")
        if mean is None or isinstance(sel, slice):
            return  # slices are views: statistics were updated in place
        # forward returns early when full (sel None); stats are tracked (and come) in pairs
        assert sel is not None and var is not None
        assert self.running_mean is not None and self.running_var is not None
        with torch.no_grad():
            self.running_mean.index_copy_(0, sel, mean)
            self.running_var.index_copy_(0, sel, var)


class _DynamicBatchNormMixin(_ChannelNormMixin):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_full:
            return super().forward(x)
        self._check_input_dim(x)
        momentum = self._momentum()
        use_batch = self.training or self.running_mean is None
        updates = self.training and self.track_running_stats
        mean, var = self._stats() if (not self.training or self.track_running_stats) \
            else (None, None)
        sel = self.selection("channels")
        out = F.batch_norm(x, mean, var, take(self.weight, 0, sel), take(self.bias, 0, sel),
                           use_batch, momentum, self.eps)
        if updates:
            self._write_back(mean, var)
        return out


class DynamicBatchNorm1d(_DynamicBatchNormMixin, nn.BatchNorm1d):
    static_type = nn.BatchNorm1d


class DynamicBatchNorm2d(_DynamicBatchNormMixin, nn.BatchNorm2d):
    static_type = nn.BatchNorm2d


class DynamicBatchNorm3d(_DynamicBatchNormMixin, nn.BatchNorm3d):
    static_type = nn.BatchNorm3d


class DynamicSyncBatchNorm(_DynamicBatchNormMixin, nn.SyncBatchNorm):
    """Sliced SyncBatchNorm; the pruned forward runs as a local BatchNorm."""

    static_type = nn.SyncBatchNorm

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")


class _DynamicInstanceNormMixin(_ChannelNormMixin):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_full:
            return super().forward(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        mean, var = self._stats()
        sel = self.selection("channels")
        use_input = self.training or not self.track_running_stats
        out = F.instance_norm(x, mean, var, take(self.weight, 0, sel), take(self.bias, 0, sel),
                              use_input, momentum, self.eps)
        if self.training and self.track_running_stats:
            self._write_back(mean, var)
        return out


class DynamicInstanceNorm1d(_DynamicInstanceNormMixin, nn.InstanceNorm1d):
    static_type = nn.InstanceNorm1d


class DynamicInstanceNorm2d(_DynamicInstanceNormMixin, nn.InstanceNorm2d):
    static_type = nn.InstanceNorm2d


class DynamicInstanceNorm3d(_DynamicInstanceNormMixin, nn.InstanceNorm3d):
    static_type = nn.InstanceNorm3d


class DynamicGroupNorm(DynamicOp, nn.GroupNorm):
    """Groups keep their number (channels are tied across groups) unless every channel is
    its own group, in which case the group count follows the kept channels."""

    static_type = nn.GroupNorm

    def _groups(self) -> int:
        if self.num_groups == self.num_channels:
            return count(self.selection("channels"), self.num_channels)
        return self.num_groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_full:
            return super().forward(x)
        sel = self.selection("channels")
        return F.group_norm(x, self._groups(), take(self.weight, 0, sel),
                            take(self.bias, 0, sel), self.eps)

    def _slice_into(self, static: Any) -> None:
        sel = self.selection("channels")
        static._parameters["weight"] = take(self.weight, 0, sel)
        static._parameters["bias"] = take(self.bias, 0, sel)
        static.num_groups = self._groups()
        static.num_channels = count(sel, self.num_channels)


class DynamicLayerNorm(DynamicOp, nn.LayerNorm):
    """LayerNorm over the last dim with a variable width."""

    static_type = nn.LayerNorm

    def _shape(self) -> tuple[int]:
        return (count(self.selection("channels"), self.normalized_shape[0]),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_full:
            return super().forward(x)
        sel = self.selection("channels")
        return F.layer_norm(x, self._shape(), take(self.weight, 0, sel),
                            take(self.bias, 0, sel), self.eps)

    def _slice_into(self, static: Any) -> None:
        sel = self.selection("channels")
        static._parameters["weight"] = take(self.weight, 0, sel)
        static._parameters["bias"] = take(self.bias, 0, sel)
        static.normalized_shape = self._shape()


class DynamicRMSNorm(DynamicOp, nn.RMSNorm):
    """RMSNorm over the last dim with a variable width."""

    static_type = nn.RMSNorm

    def _shape(self) -> tuple[int]:
        return (count(self.selection("channels"), self.normalized_shape[0]),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_full:
            return super().forward(x)
        weight = take(self.weight, 0, self.selection("channels"))
        return F.rms_norm(x, self._shape(), weight, self.eps)

    def _slice_into(self, static: Any) -> None:
        static._parameters["weight"] = take(self.weight, 0, self.selection("channels"))
        static.normalized_shape = self._shape()
