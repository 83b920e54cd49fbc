"""Layer records: everything the library knows about each layer type, in one place.

:data:`LAYERS` maps each supported ``nn.Module`` type to its :class:`LayerRecord` (channel
rule, dynamic op, weight dims of its channels, output-shape formula, in-place residual
safety); :func:`layer_table` merges a conversion's own records over it; :class:`UnitWeights`
reads the weights that produce a unit's channels through the records.
"""

from __future__ import annotations

from fxrazor.layers.records import (
    LAYERS,
    LayerRecord,
    inplace_safe_types,
    layer_shapes,
    layer_table,
)
from fxrazor.layers.weights import ProducerWeight, UnitWeights

__all__ = ["LAYERS", "LayerRecord", "layer_table", "inplace_safe_types", "layer_shapes",
           "ProducerWeight",
           "UnitWeights"]
