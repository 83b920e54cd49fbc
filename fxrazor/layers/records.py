"""One record per layer type: everything the library knows about it, in one place.

A :class:`LayerRecord` says, for one ``nn.Module`` type: its channel rule (how its input and
output channels relate), its dynamic op (the supernet's version of the layer), which weight
dim holds each prunable role's channels, the formula of its output shape (used while
recording shapes on the meta device) and whether adding a residual into its output in
place is safe. The analysis, insertion, freezing, shape recording, L1 importance and the
zero-invariance oracle all read these records, so adding a layer type is one record (plus
its dynamic op if it is new), passed per call as ``convert(..., layers={MyLayer: record})``.

Example:
    >>> from torch import nn
    >>> record = LAYERS[nn.ConvTranspose2d]
    >>> record.dynamic_op.__name__, dict(record.channel_dims)
    ('DynamicConvTranspose2d', {'out': 1, 'in': 0})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from torch import nn

from fxrazor.analysis.context import ModuleRule
from fxrazor.errors import InvalidArgumentError
from fxrazor.ops import (
    DynamicBatchNorm1d,
    DynamicBatchNorm2d,
    DynamicBatchNorm3d,
    DynamicConv1d,
    DynamicConv2d,
    DynamicConv3d,
    DynamicConvTranspose1d,
    DynamicConvTranspose2d,
    DynamicConvTranspose3d,
    DynamicEmbedding,
    DynamicGroupNorm,
    DynamicInstanceNorm1d,
    DynamicInstanceNorm2d,
    DynamicInstanceNorm3d,
    DynamicLayerNorm,
    DynamicLinear,
    DynamicOp,
    DynamicRMSNorm,
    DynamicSyncBatchNorm,
)
from fxrazor.rules import layers as rules
from fxrazor.trace.meta_shapes import (
    LayerShape,
    adaptive_pool_shape,
    conv_shape,
    linear_shape,
    pool_shape,
    same_shape,
)
from fxrazor.trace.tracer import lookup_type

__all__ = ["LayerRecord", "LAYERS", "layer_table", "inplace_safe_types", "layer_shapes"]


@dataclass(frozen=True)
class LayerRecord:
    """What the library knows about one layer type.

    Attributes:
        rule: the channel rule, ``rule(ctx, node, module)`` (see :mod:`fxrazor.rules`).
        dynamic_op: the op that replaces the layer in a supernet (a subclass of the layer
            with selections per role), or None for layers without weights to slice.
        channel_dims: for each prunable role the rule claims (``"out"``, ``"in"``,
            ``"channels"``), the dim of ``module.weight`` that holds its channels; a
            producing role's ``bias`` holds them on dim 0.
        meta_shape: ``formula(module, input) -> meta tensor | None``, the output shape
            without running the layer (None: it runs on meta tensors).
        inplace_add_safe: a residual may be added into the layer's output in place (the
            layer does not save its output for the backward pass).
    """

    rule: ModuleRule
    dynamic_op: type[DynamicOp] | None = None
    channel_dims: Mapping[str, int] = field(default_factory=dict)
    meta_shape: LayerShape | None = None
    inplace_add_safe: bool = False

    @property
    def roles(self) -> tuple[str, ...]:
        """The prunable roles of the layer, in the order its dynamic op slices them."""
        return tuple(self.channel_dims)


def _dims(**dims: int) -> Mapping[str, int]:
    return MappingProxyType(dims)


_CONV = _dims(out=0, **{"in": 1})
_CONV_TRANSPOSED = _dims(out=1, **{"in": 0})  # weight is (in, out / groups, *kernel)
_NORM = _dims(channels=0)


def _conv(dynamic: type[DynamicOp], shape: LayerShape | None) -> LayerRecord:
    return LayerRecord(rules.conv, dynamic, _CONV, shape, inplace_add_safe=True)


def _batch_norm(dynamic: type[DynamicOp]) -> LayerRecord:
    return LayerRecord(rules.channel_norm, dynamic, _NORM, same_shape, inplace_add_safe=True)


def _build() -> dict[type[nn.Module], LayerRecord]:
    table: dict[type[nn.Module], LayerRecord] = {
        nn.Conv1d: _conv(DynamicConv1d, conv_shape),
        nn.Conv2d: _conv(DynamicConv2d, conv_shape),
        nn.Conv3d: _conv(DynamicConv3d, conv_shape),
        nn.ConvTranspose1d: replace(_conv(DynamicConvTranspose1d, None),
                                    channel_dims=_CONV_TRANSPOSED),
        nn.ConvTranspose2d: replace(_conv(DynamicConvTranspose2d, None),
                                    channel_dims=_CONV_TRANSPOSED),
        nn.ConvTranspose3d: replace(_conv(DynamicConvTranspose3d, None),
                                    channel_dims=_CONV_TRANSPOSED),
        nn.Linear: LayerRecord(rules.linear, DynamicLinear, _CONV, linear_shape),
        nn.Embedding: LayerRecord(rules.embedding, DynamicEmbedding, _dims(out=1)),
        nn.BatchNorm1d: _batch_norm(DynamicBatchNorm1d),
        nn.BatchNorm2d: _batch_norm(DynamicBatchNorm2d),
        nn.BatchNorm3d: _batch_norm(DynamicBatchNorm3d),
        nn.SyncBatchNorm: _batch_norm(DynamicSyncBatchNorm),
        nn.InstanceNorm1d: LayerRecord(rules.channel_norm, DynamicInstanceNorm1d, _NORM,
                                       same_shape),
        nn.InstanceNorm2d: LayerRecord(rules.channel_norm, DynamicInstanceNorm2d, _NORM,
                                       same_shape),
        nn.InstanceNorm3d: LayerRecord(rules.channel_norm, DynamicInstanceNorm3d, _NORM,
                                       same_shape),
        nn.GroupNorm: LayerRecord(rules.group_norm, DynamicGroupNorm, _NORM, same_shape),
        nn.LayerNorm: LayerRecord(rules.layer_norm, DynamicLayerNorm, _NORM, same_shape),
        nn.RMSNorm: LayerRecord(rules.layer_norm, DynamicRMSNorm, _NORM, same_shape),
        nn.Flatten: LayerRecord(rules.flatten_module),
        nn.Softmax: LayerRecord(rules.softmax_module),
        nn.LogSoftmax: LayerRecord(rules.softmax_module),
        nn.PReLU: LayerRecord(rules.prelu),
    }
    # element-wise layers: the output has the input's channels, element for element
    kind: type[nn.Module]
    for kind in (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
                 nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Mish, nn.Dropout, nn.Dropout1d,
                 nn.Dropout2d, nn.Dropout3d, nn.Identity):
        table[kind] = LayerRecord(rules.elementwise_module, meta_shape=same_shape)
    for kind in (nn.SELU, nn.CELU, nn.Softplus, nn.AlphaDropout, nn.Hardtanh, nn.LogSigmoid,
                 nn.Softsign, nn.Tanhshrink, nn.Threshold):
        table[kind] = LayerRecord(rules.elementwise_module)  # shapes run on meta
    # spatial layers: channels pass, the spatial dims are mixed
    for kind in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
                 nn.AvgPool3d):
        table[kind] = LayerRecord(rules.spatial_module, meta_shape=pool_shape)
    for kind in (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                 nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d):
        table[kind] = LayerRecord(rules.spatial_module, meta_shape=adaptive_pool_shape)
    for kind in (nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, nn.LPPool1d,
                 nn.LPPool2d):
        table[kind] = LayerRecord(rules.spatial_module)
    return table


# The library's layer records, by exact type (a subclass that keeps its base's forward uses
# the base's record). Never changed: per-call additions go through ``layer_table``.
LAYERS: Mapping[type[nn.Module], LayerRecord] = MappingProxyType(_build())


def layer_table(layers: Mapping[type, LayerRecord] | None = None,
                module_rules: Mapping[type, ModuleRule] | None = None,
                dynamic_ops: Mapping[type, type[DynamicOp]] | None = None
                ) -> dict[type, LayerRecord]:
    """The records of one conversion: the library's, then ``layers``, then the rule and
    dynamic-op overrides of ``convert(module_rules=..., dynamic_ops=...)``.

    Example:
        >>> from torch import nn
        >>> class Swish(nn.Module):
        ...     def forward(self, x):
        ...         return x * x.sigmoid()
        >>> table = layer_table(module_rules={Swish: rules.elementwise_module})
        >>> table[Swish].rule is rules.elementwise_module, table[Swish].dynamic_op
        (True, None)
    """
    table = {**LAYERS, **(layers or {})}
    for kind, rule in (module_rules or {}).items():
        table[kind] = replace(table[kind], rule=rule) if kind in table else LayerRecord(rule)
    for kind, op in (dynamic_ops or {}).items():
        base = lookup_type(table, kind)  # its own record, or a base whose forward it keeps
        if base is None:
            raise InvalidArgumentError(
                f"dynamic_ops names {kind.__name__}, which has no channel rule, so no unit "
                f"would ever reach its dynamic op; give its rule too: "
                f"convert(..., module_rules={{{kind.__name__}: rule}}) or layers={{...}}")
        table[kind] = replace(base, dynamic_op=op)
    return table


def inplace_safe_types(layers: Mapping[type, LayerRecord]) -> tuple[type, ...]:
    """The layer types whose records allow adding a residual into their output in place."""
    return tuple(kind for kind, record in layers.items() if record.inplace_add_safe)


def layer_shapes(layers: Mapping[type, LayerRecord]) -> dict[type, LayerShape]:
    """The output-shape formulas of the layer types that have one, by type."""
    return {kind: record.meta_shape for kind, record in layers.items()
            if record.meta_shape is not None}
