"""Dynamic ops: layers whose channel widths follow the units of a supernet.

Which layer type gets which op is said by its record (:mod:`fxrazor.layers`).

Example:
    >>> from torch import nn
    >>> op = DynamicConv2d.from_static(nn.Conv2d(4, 8, 1))
    >>> op.set_selection("out", slice(0, 3))
    >>> op.to_static().weight.shape
    torch.Size([3, 4, 1, 1])
"""

from __future__ import annotations

from fxrazor.ops.base import Binding, DynamicOp, Selection, take
from fxrazor.ops.conv import (
    DYNAMIC_CONVS,
    DynamicConv1d,
    DynamicConv2d,
    DynamicConv3d,
    DynamicConvNd,
    DynamicConvTranspose1d,
    DynamicConvTranspose2d,
    DynamicConvTranspose3d,
)
from fxrazor.ops.dmcp_norm import DMCPBatchNorm2d
from fxrazor.ops.fuse_conv import FuseConv2d
from fxrazor.ops.graph_ops import DynamicParam, SizeCounter
from fxrazor.ops.linear import DynamicEmbedding, DynamicLinear
from fxrazor.ops.norm import (
    DynamicBatchNorm1d,
    DynamicBatchNorm2d,
    DynamicBatchNorm3d,
    DynamicGroupNorm,
    DynamicInstanceNorm1d,
    DynamicInstanceNorm2d,
    DynamicInstanceNorm3d,
    DynamicLayerNorm,
    DynamicRMSNorm,
    DynamicSyncBatchNorm,
)
from fxrazor.ops.switchable_norm import (
    SwitchableBatchNorm1d,
    SwitchableBatchNorm2d,
    SwitchableBatchNorm3d,
)

__all__ = [
    "DynamicOp", "Binding", "Selection", "take", "DynamicParam", "SizeCounter",
    "DynamicConv1d", "DynamicConv2d", "DynamicConv3d", "DynamicConvTranspose1d",
    "DynamicConvTranspose2d", "DynamicConvTranspose3d", "DynamicLinear", "DynamicEmbedding",
    "DynamicBatchNorm1d", "DynamicBatchNorm2d", "DynamicBatchNorm3d", "DynamicSyncBatchNorm",
    "DynamicInstanceNorm1d", "DynamicInstanceNorm2d", "DynamicInstanceNorm3d",
    "DynamicGroupNorm", "DynamicLayerNorm", "DynamicRMSNorm", "DynamicConvNd", "DYNAMIC_CONVS",
    # the layers that method units bring (slimmable, DCFF, DMCP)
    "SwitchableBatchNorm1d", "SwitchableBatchNorm2d", "SwitchableBatchNorm3d", "FuseConv2d",
    "DMCPBatchNorm2d",
]
