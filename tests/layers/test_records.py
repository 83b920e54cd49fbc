"""Layer records: one place per layer type, read by L1 importance, the oracle and insert.

The L1 scores are computed here by hand from the weights (the mean absolute value of the
weights that create each output channel, biases not counted, averaged over the positions a
channel has: arXiv 1608.08710 as MMRazor's L1MutableChannelUnit computes it).
"""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

import fxrazor
from fxrazor.analysis.context import RuleContext
from fxrazor.analysis.elements import TensorInfo
from fxrazor.layers import LAYERS, LayerRecord, UnitWeights, layer_table
from fxrazor.ops import DynamicOp, take
from fxrazor.verify.oracle import zero_pruned_channels


def _unit_of(sn: fxrazor.Supernet, layer: str):
    """The unit whose channels the layer produces."""
    for unit, spec in zip(sn.every_unit(), sn.analysis.units, strict=True):
        if any(slot.target == layer and slot.is_producer for slot, _ in spec.members):
            return unit
    raise AssertionError(f"no unit produced by {layer}")


# (name, producer, input) : every producer is followed by a 1x1 conv / linear that reads it
CONVS = [
    ("conv1d", nn.Conv1d(3, 6, 3), (2, 3, 9)),
    ("conv2d", nn.Conv2d(3, 6, 3), (2, 3, 7, 7)),
    ("conv3d", nn.Conv3d(3, 6, 2), (2, 3, 4, 4, 4)),
    ("conv_transpose1d", nn.ConvTranspose1d(3, 6, 3), (2, 3, 5)),
    ("conv_transpose2d", nn.ConvTranspose2d(3, 6, 3), (2, 3, 4, 4)),
    ("conv_transpose3d", nn.ConvTranspose3d(3, 6, 2), (2, 3, 3, 3, 3)),
]


def _reader(dims: int) -> nn.Module:
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims](6, 2, 1)


@pytest.mark.parametrize("name,layer,shape", CONVS, ids=[c[0] for c in CONVS])
def test_l1_scores_of_convolutions_by_hand(name: str, layer: nn.Module, shape: tuple) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(layer, _reader(len(shape) - 2)).eval()
    w = layer.weight.detach()
    if "transpose" in name:  # (in, out, *kernel): output channels on dim 1
        expected = w.abs().mean(dim=[d for d in range(w.dim()) if d != 1])
    else:  # (out, in, *kernel)
        expected = w.abs().flatten(1).mean(1)
    sn = fxrazor.convert(model, torch.randn(shape), unit="l1")
    unit = _unit_of(sn, "0")
    torch.testing.assert_close(unit.importance, expected)
    unit.current_choice = 2
    assert unit.current_mask.nonzero().flatten().tolist() == sorted(expected.topk(2).indices.tolist())


def test_l1_scores_of_a_grouped_conv_average_the_tied_channels() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, groups=2)  # channel j of group 0 is tied to channel j of group 1
    model = nn.Sequential(conv, nn.Conv2d(6, 2, 1)).eval()
    per_filter = conv.weight.detach().abs().mean(dim=(1, 2, 3))
    expected = (per_filter[:3] + per_filter[3:]) / 2
    sn = fxrazor.convert(model, torch.randn(1, 4, 6, 6), unit="l1")
    torch.testing.assert_close(_unit_of(sn, "0").importance, expected)


def test_a_grouped_transposed_conv_is_pinned_so_it_is_never_scored() -> None:
    model = nn.Sequential(nn.ConvTranspose2d(4, 6, 3, groups=2), nn.Conv2d(6, 2, 1)).eval()
    sn = fxrazor.convert(model, torch.randn(1, 4, 5, 5), unit="l1")
    assert not any(slot.target == "0" for spec in sn.analysis.units for slot, _ in spec.members)
    assert any("grouped transposed conv" in r for g in sn.analysis.pinned for r in g.reasons)


def test_l1_scores_of_linear_and_embedding_by_hand() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(5, 6)
    model = nn.Sequential(linear, nn.ReLU(), nn.Linear(6, 2))
    sn = fxrazor.convert(model, torch.randn(3, 5), unit="l1")
    torch.testing.assert_close(_unit_of(sn, "0").importance, linear.weight.detach().abs().mean(1))

    embedding = nn.Embedding(10, 6)  # (num_embeddings, dim): channels on dim 1
    model = nn.Sequential(embedding, nn.Linear(6, 2))
    sn = fxrazor.convert(model, torch.randint(0, 10, (2, 4)), unit="l1")
    torch.testing.assert_close(_unit_of(sn, "0").importance,
                               embedding.weight.detach().abs().mean(0))


@pytest.mark.parametrize("kind", [k for k, r in LAYERS.items() if r.dynamic_op is not None],
                         ids=lambda k: k.__name__)
def test_every_dynamic_op_is_a_subclass_of_its_layer(kind: type) -> None:
    op = LAYERS[kind].dynamic_op
    assert op is not None and issubclass(op, kind) and op.static_type is kind
    assert LAYERS[kind].channel_dims, "a layer with a dynamic op has prunable roles"


def test_channel_dims_hold_the_channel_counts() -> None:
    cases = {nn.Conv2d(4, 6, 3): {"out": 6, "in": 4},
             nn.ConvTranspose2d(4, 6, 3): {"out": 6, "in": 4},
             nn.Linear(4, 6): {"out": 6, "in": 4}, nn.Embedding(9, 6): {"out": 6},
             nn.BatchNorm2d(6): {"channels": 6}, nn.LayerNorm(6): {"channels": 6},
             nn.GroupNorm(2, 6): {"channels": 6}}
    for layer, counts in cases.items():
        dims = LAYERS[type(layer)].channel_dims
        assert {role: layer.weight.shape[d] for role, d in dims.items()} == counts


def test_unit_weights_name_the_transposed_conv_output_dim() -> None:
    model = nn.Sequential(nn.ConvTranspose2d(2, 4, 1), nn.Conv2d(4, 2, 1))
    sn = fxrazor.convert(model, torch.randn(1, 2, 3, 3))
    weights = UnitWeights(sn.graph_module, sn.analysis.units[0])
    assert [(p.dim, tuple(p.weight.shape)) for p in weights.producers(with_bias=False)] \
        == [(1, (2, 4, 1, 1))]


# --------------------------------------------- a new layer type is one record and its op
class Scale(nn.Module):
    """A per-channel scale over dim 1: not a torch layer, so unknown until recorded."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, *([1] * (x.dim() - 2)))


class DynamicScale(DynamicOp, Scale):
    static_type = Scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = take(self.weight, 0, self.selection("channels"))
        return x * weight.view(1, -1, *([1] * (x.dim() - 2)))

    def _slice_into(self, static: Scale) -> None:
        static.weight = nn.Parameter(take(self.weight, 0, self.selection("channels")))


def scale_rule(ctx: RuleContext, node: fx.Node, module: Scale) -> TensorInfo | None:
    info = ctx.info(node.args[0])
    if not isinstance(info, TensorInfo) or info.ndim < 2 or ctx.shape(node) != info.shape:
        return ctx.unknown(node)
    channels = ctx.slot(str(node.target), "channels", module.weight.shape[0])
    if 1 in info.axes:
        ctx.space.join(info.axes[1], channels)
    else:
        ctx.space.pin(channels, f"{ctx.describe(node)} (input is not prunable)")
    return info


SCALE = LayerRecord(scale_rule, DynamicScale, {"channels": 0})


def test_a_new_layer_type_is_one_record() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), Scale(8), nn.ReLU(), nn.Conv2d(8, 2, 1)).eval()
    x = torch.randn(2, 3, 5, 5)
    # without the record, torch.fx keeps the scale opaque (x.dim() of a traced value) and
    # it pins the conv's channels ('auto' would capture it with torch.export instead)
    unknown = fxrazor.convert(model, x, capture="fx")
    assert unknown.units == []
    sn = fxrazor.convert(model, x, layers={Scale: SCALE})
    assert [u.num_channels for u in sn.units] == [8]
    assert isinstance(sn.graph_module.get_submodule("1"), DynamicScale)
    torch.testing.assert_close(sn(x), model(x))
    sn.set_choices({sn.units[0].name: 3})
    frozen = fxrazor.freeze(sn)
    assert type(frozen.get_submodule("1")) is Scale
    assert frozen.get_submodule("1").weight.shape == (3,)
    torch.testing.assert_close(frozen(x), sn(x))
    # the oracle reads the record's channel dim for the scale's weight too
    torch.testing.assert_close(zero_pruned_channels(model, sn, layer_table({Scale: SCALE}))(x),
                               frozen(x))


def test_layer_table_overrides_rules_and_ops_without_changing_the_library() -> None:
    table = layer_table(module_rules={nn.ReLU: scale_rule}, dynamic_ops={nn.Conv2d: DynamicScale})
    assert table[nn.ReLU].rule is scale_rule and table[nn.Conv2d].dynamic_op is DynamicScale
    assert LAYERS[nn.ReLU].rule is not scale_rule
    assert LAYERS[nn.Conv2d].dynamic_op is not DynamicScale
    with pytest.raises(fxrazor.FxRazorError, match="no channel rule"):
        layer_table(dynamic_ops={Scale: DynamicScale})
