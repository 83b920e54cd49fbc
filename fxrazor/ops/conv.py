"""Dynamic convolutions (1d/2d/3d and transposed) with variable input/output channels.

Group convolutions prune evenly: the analysis ties channel j of every group, so the kept
input positions of group 0 give the kept columns of every group. Depthwise convolutions
keep whole groups, so their group count follows the kept channels.

A convolution (not transposed) can also search its kernel size: ``register_mutable_attr(
"kernel_size", mutable)`` makes it run the centre crop of its kernel that the mutable's
current choice names, read at every forward (see :mod:`fxrazor.ops.kernel`).

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

from fxrazor.errors import InvalidArgumentError, InvalidChoiceError
from fxrazor.ops.base import DynamicOp, count, take
from fxrazor.ops.kernel import KernelPlan, crop_kernel, kernel_plan

__all__ = [
    "DynamicConvNd", "DYNAMIC_CONVS", "DynamicConv1d", "DynamicConv2d", "DynamicConv3d",
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

    # ---- searchable attributes (the kernel size) ----------------------------------------
    def register_mutable_attr(self, attr: str, mutable: Any, key: str | None = None) -> None:
        """Let ``mutable.current_choice`` set attribute ``attr`` at every forward; only
        ``"kernel_size"`` is searchable (an int or one int per spatial dim). ``key`` names
        the pair in error messages. ``mutable=None`` ends the search (full kernel).

        The mutable is kept as a plain reference, not a submodule: it belongs to the
        search space, and the layer must not carry it into ``to_static()``.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> from fxrazor.mutables.mutable_value import OneShotMutableValue
            >>> conv = DynamicConv2d.from_static(nn.Conv2d(2, 2, 5, padding=2))
            >>> k = OneShotMutableValue([3, 5])
            >>> conv.register_mutable_attr("kernel_size", k)
            >>> k.current_choice = 3
            >>> conv.to_static().kernel_size, conv.to_static().padding
            ((3, 3), (1, 1))
        """
        if attr != "kernel_size":
            raise InvalidArgumentError(
                f"{type(self).__name__} can search 'kernel_size' only, not {attr!r}")
        self.__dict__["_fxr_kernel"] = None if mutable is None else (mutable, key)
        self.__dict__["_fxr_kernel_plans"] = {}

    @property
    def mutable_attrs(self) -> dict[str, Any]:
        """``{attribute: mutable}`` of the searchable attributes now registered."""
        source = self.__dict__.get("_fxr_kernel")
        return {} if source is None else {"kernel_size": source[0]}

    def kernel_plan(self) -> KernelPlan | None:
        """How the current kernel choice runs; None for the layer's own kernel."""
        source = self.__dict__.get("_fxr_kernel")
        if source is None:
            return None
        mutable, key = source
        choice = mutable.current_choice
        plans = self.__dict__["_fxr_kernel_plans"]
        cache_key = (type(choice), tuple(choice) if isinstance(choice, list) else choice)
        plan = plans.get(cache_key)
        if plan is None:
            try:
                plan = kernel_plan(self, choice)
            except InvalidChoiceError as e:  # name the layer and the mutable
                raise type(e)(f"{key or type(self).__name__} driven by {mutable!r}: {e}") from e
            plans[cache_key] = plan
        return None if plan.full else plan

    # ---- slicing -------------------------------------------------------------------------------
    def _sliced(self, plan: KernelPlan | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, int, int, int]:
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
        if plan is not None:
            weight = crop_kernel(weight, plan)
        bias = take(self.bias, 0, out_sel)
        return weight, bias, groups, count(in_sel, self.in_channels), count(out_sel,
                                                                           self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.kernel_plan()
        if plan is None and self.is_full:
            return super().forward(x)
        weight, bias, groups, _, _ = self._sliced(plan)
        padding: Any = self.padding if plan is None else plan.padding
        if self.padding_mode != "zeros":
            pads = self._reversed_padding_repeated_twice if plan is None \
                else plan.reversed_padding
            x = F.pad(x, pads, mode=self.padding_mode)
            padding = (0,) * len(self.kernel_size)
        fn = _CONV_FNS[len(self.kernel_size)]
        return fn(x, weight, bias, self.stride, padding, self.dilation, groups)

    def _slice_into(self, static: Any) -> None:
        plan = self.kernel_plan()
        # the search space stays with the supernet: the static layer is plain torch
        static.__dict__.pop("_fxr_kernel", None)
        static.__dict__.pop("_fxr_kernel_plans", None)
        weight, bias, groups, c_in, c_out = self._sliced(plan)
        static._parameters["weight"] = weight
        static._parameters["bias"] = bias
        static.groups, static.in_channels, static.out_channels = groups, c_in, c_out
        if plan is not None:
            static.kernel_size, static.padding = plan.kernel_size, plan.padding
            static._reversed_padding_repeated_twice = list(plan.reversed_padding)


class DynamicConv1d(_DynamicConvMixin, nn.Conv1d):
    static_type = nn.Conv1d


class DynamicConv2d(_DynamicConvMixin, nn.Conv2d):
    static_type = nn.Conv2d


class DynamicConv3d(_DynamicConvMixin, nn.Conv3d):
    static_type = nn.Conv3d


# The base of the (not transposed) dynamic convs, and which one each conv type gets: what
# can search a kernel size.
DynamicConvNd = _DynamicConvMixin
DYNAMIC_CONVS: dict[type[nn.Module], type[_DynamicConvMixin]] = {
    nn.Conv1d: DynamicConv1d, nn.Conv2d: DynamicConv2d, nn.Conv3d: DynamicConv3d}


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
