"""Dynamic convolutions (1d/2d/3d and transposed) with variable input/output channels.

Group convolutions prune evenly: the analysis ties channel j of every group, so the kept
input positions of group 0 give the kept columns of every group. Depthwise convolutions
keep whole groups, so their group count follows the kept channels.

Example:
    >>> import torch
    >>> from torch import nn
    >>> conv = DynamicConv2d.from_static(nn.Conv2d(4, 6, 3))
    >>> conv.set_selection("out", slice(0, 2))
    >>> conv.set_selection("in", torch.tensor([0, 3]))
    >>> x = torch.randn(1, 2, 5, 5)
    >>> torch.equal(conv(x), conv.to_static()(x))
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from fxrazor.ops.base import DynamicOp, count, take

__all__ = [
    "DynamicConv1d", "DynamicConv2d", "DynamicConv3d",
    "DynamicConvTranspose1d", "DynamicConvTranspose2d", "DynamicConvTranspose3d",
]

if TYPE_CHECKING:  # the mixins are only ever combined with these layer types
    _ConvBase = nn.modules.conv._ConvNd
    _ConvTransposeBase = nn.modules.conv._ConvTransposeNd
else:
    _ConvBase = _ConvTransposeBase = object

_CONV_FNS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONVT_FNS = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _group_columns(sel: Any, per_group: int) -> Any:
    """Kept columns inside one group, from kept positions across all groups."""
    if sel is None:
        return None
    if isinstance(sel, slice):
        return slice(sel.start, min(sel.stop, per_group))
    return sel[sel < per_group]


class _DynamicConvMixin(DynamicOp, _ConvBase):

    def _sliced(self) -> tuple[torch.Tensor, torch.Tensor | None, int, int, int]:
        out_sel, in_sel = self.selection("out"), self.selection("in")
        g = self.groups
        weight = take(self.weight, 0, out_sel)
        if g == 1:
            weight = take(weight, 1, in_sel)
            groups = 1
        elif self.in_channels == g:  # depthwise: whole groups kept
            groups = count(in_sel, self.in_channels)
        else:
            weight = take(weight, 1, _group_columns(in_sel, self.in_channels // g))
            groups = g
        bias = take(self.bias, 0, out_sel)
        return weight, bias, groups, count(in_sel, self.in_channels), count(out_sel,
                                                                           self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_full:
            return super().forward(x)
        weight, bias, groups, _, _ = self._sliced()
        padding = self.padding
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = (0,) * len(self.kernel_size)
        fn = _CONV_FNS[len(self.kernel_size)]
        return fn(x, weight, bias, self.stride, padding, self.dilation, groups)

    def _slice_into(self, static: Any) -> None:
        weight, bias, groups, c_in, c_out = self._sliced()
        static._parameters["weight"] = weight
        static._parameters["bias"] = bias
        static.groups, static.in_channels, static.out_channels = groups, c_in, c_out


class DynamicConv1d(_DynamicConvMixin, nn.Conv1d):
    static_type = nn.Conv1d


class DynamicConv2d(_DynamicConvMixin, nn.Conv2d):
    static_type = nn.Conv2d


class DynamicConv3d(_DynamicConvMixin, nn.Conv3d):
    static_type = nn.Conv3d


class _DynamicConvTransposeMixin(DynamicOp, _ConvTransposeBase):
    """Transposed conv (groups == 1; the analysis pins grouped ones): weight is (in, out, k)."""


    def _sliced(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        out_sel, in_sel = self.selection("out"), self.selection("in")
        weight = take(take(self.weight, 0, in_sel), 1, out_sel)
        return weight, take(self.bias, 0, out_sel)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self.is_full:
            return super().forward(x, output_size)
        weight, bias = self._sliced()
        n = len(self.kernel_size)
        padding = cast("tuple[int, ...]", self.padding)  # transposed convs reject str padding
        # torch's stub wants lists here; torch's own forward passes these same tuples
        output_padding = self._output_padding(
            x, output_size,
            self.stride, padding, self.kernel_size,  # type: ignore[arg-type]
            n, self.dilation)  # type: ignore[arg-type]
        return _CONVT_FNS[n](x, weight, bias, self.stride, padding, output_padding,
                             self.groups, self.dilation)

    def _slice_into(self, static: Any) -> None:
        weight, bias = self._sliced()
        static._parameters["weight"] = weight
        static._parameters["bias"] = bias
        static.in_channels = count(self.selection("in"), self.in_channels)
        static.out_channels = count(self.selection("out"), self.out_channels)


class DynamicConvTranspose1d(_DynamicConvTransposeMixin, nn.ConvTranspose1d):
    static_type = nn.ConvTranspose1d


class DynamicConvTranspose2d(_DynamicConvTransposeMixin, nn.ConvTranspose2d):
    static_type = nn.ConvTranspose2d


class DynamicConvTranspose3d(_DynamicConvTransposeMixin, nn.ConvTranspose3d):
    static_type = nn.ConvTranspose3d
