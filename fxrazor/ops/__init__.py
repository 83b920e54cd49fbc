"""Dynamic ops: layers whose channel widths follow the units of a supernet.

Example:
    >>> from torch import nn
    >>> DYNAMIC_OPS[nn.Conv2d].__name__
    'DynamicConv2d'
"""

from __future__ import annotations

from torch import nn

from fxrazor.ops.base import DynamicOp, Selection, take
from fxrazor.ops.conv import (
    DynamicConv1d,
    DynamicConv2d,
    DynamicConv3d,
    DynamicConvTranspose1d,
    DynamicConvTranspose2d,
    DynamicConvTranspose3d,
)
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

__all__ = [
    "DYNAMIC_OPS", "DynamicOp", "Selection", "take", "DynamicParam", "SizeCounter",
    "DynamicConv1d", "DynamicConv2d", "DynamicConv3d", "DynamicConvTranspose1d",
    "DynamicConvTranspose2d", "DynamicConvTranspose3d", "DynamicLinear", "DynamicEmbedding",
    "DynamicBatchNorm1d", "DynamicBatchNorm2d", "DynamicBatchNorm3d", "DynamicSyncBatchNorm",
    "DynamicInstanceNorm1d", "DynamicInstanceNorm2d", "DynamicInstanceNorm3d",
    "DynamicGroupNorm", "DynamicLayerNorm", "DynamicRMSNorm",
]

# Static layer type → its dynamic op. Extend per call with convert(..., dynamic_ops={...}).
DYNAMIC_OPS: dict[type[nn.Module], type[DynamicOp]] = {
    nn.Conv1d: DynamicConv1d,
    nn.Conv2d: DynamicConv2d,
    nn.Conv3d: DynamicConv3d,
    nn.ConvTranspose1d: DynamicConvTranspose1d,
    nn.ConvTranspose2d: DynamicConvTranspose2d,
    nn.ConvTranspose3d: DynamicConvTranspose3d,
    nn.Linear: DynamicLinear,
    nn.Embedding: DynamicEmbedding,
    nn.BatchNorm1d: DynamicBatchNorm1d,
    nn.BatchNorm2d: DynamicBatchNorm2d,
    nn.BatchNorm3d: DynamicBatchNorm3d,
    nn.SyncBatchNorm: DynamicSyncBatchNorm,
    nn.InstanceNorm1d: DynamicInstanceNorm1d,
    nn.InstanceNorm2d: DynamicInstanceNorm2d,
    nn.InstanceNorm3d: DynamicInstanceNorm3d,
    nn.GroupNorm: DynamicGroupNorm,
    nn.LayerNorm: DynamicLayerNorm,
    nn.RMSNorm: DynamicRMSNorm,
}
