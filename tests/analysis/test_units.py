"""Exact channel units of discover_units on small models, one test per pattern.

Every expectation below is worked out by hand from the model's structure (see the builders
in ``tests/models.py``), never taken from the analysis itself.
"""

from __future__ import annotations

import re
from collections import Counter

import models as M
import numpy as np
import pytest

from fxrazor.analysis.result import ChannelAnalysis, PinnedGroup, UnitSpec
from fxrazor.errors import TraceFailedError
from fxrazor.passes.discover_units import discover_units
from fxrazor.trace.tracer import trace_model


# ---------------------------------------------------------------------------- helpers
def analyse(builder, *args) -> ChannelAnalysis:
    model, x = builder(*args)
    return discover_units(trace_model(model, x))


def membership(a: ChannelAnalysis) -> Counter:
    """Each unit as (num_channels, frozenset of (slot, r)); a Counter so duplicates show."""
    return Counter(
        (u.num_channels, frozenset((str(s), int(p.shape[1])) for s, p in u.members))
        for u in a.units
    )


def expect(*units: tuple[int, dict[str, int]]) -> Counter:
    return Counter((n, frozenset(slots.items())) for n, slots in units)


def unit_with(a: ChannelAnalysis, *slots: str) -> UnitSpec:
    """The one unit that has all ``slots`` as members."""
    found = [u for u in a.units if set(slots) <= {str(s) for s, _ in u.members}]
    assert len(found) == 1, f"{len(found)} units hold {slots}"
    return found[0]


def positions(unit: UnitSpec, slot: str) -> list[list[int]]:
    (pos,) = [p for s, p in unit.members if str(s) == slot]
    return pos.tolist()


def column(values) -> list[list[int]]:
    return [[int(v)] for v in values]


def pinned_positions(a: ChannelAnalysis) -> dict[str, list[int]]:
    """Slot → its pinned positions, for every slot with at least one."""
    out = {}
    for slot, pmap in a.slot_maps.items():
        pinned = np.flatnonzero(pmap.unit < 0).tolist()
        if pinned:
            out[str(slot)] = pinned
    return out


def pinned_whole(**sizes: int) -> dict[str, list[int]]:
    return {k.replace("__", "."): list(range(n)) for k, n in sizes.items()}


def reasons_of(a: ChannelAnalysis, slot: str) -> list[str]:
    return [r for g in a.pinned if slot in {str(s) for s in g.slots} for r in g.reasons]


def ident(n: int) -> list[list[int]]:
    return column(range(n))


# ------------------------------------------------------------------ invariants (all models)
@pytest.mark.parametrize("builder", M.ALL_BUILDERS, ids=lambda b: b.__name__)
def test_units_and_pins_partition_every_slot(builder):
    a = analyse(builder)
    seen: dict[str, list[int]] = {str(s): [] for s in a.slot_maps}
    for index, unit in enumerate(a.units):
        assert unit.num_channels >= 1
        assert any(s.is_producer for s, _ in unit.members), unit.name
        for slot, pos in unit.members:
            assert pos.shape[0] == unit.num_channels and pos.ndim == 2
            pmap = a.slot_maps[slot]
            for k, row in enumerate(pos.tolist()):
                assert (pmap.unit[row] == index).all() and (pmap.channel[row] == k).all()
            seen[str(slot)] += pos.ravel().tolist()
    for slot, pmap in a.slot_maps.items():
        pinned = np.flatnonzero(pmap.unit < 0).tolist()
        assert (pmap.channel[pinned] == -1).all()
        assert sorted(seen[str(slot)] + pinned) == list(range(slot.size)), str(slot)
    assert len({u.name for u in a.units}) == len(a.units)
    for group in a.pinned:
        assert group.reasons and group.num_positions > 0


def test_pinned_groups_read_pickle_and_copy_as_a_tuple():
    import copy
    import pickle

    a = analyse(M.chain)
    groups = tuple(a.pinned)  # worked out on this first read
    assert groups and all(isinstance(g, PinnedGroup) for g in groups)
    assert a.pinned == groups and len(a.pinned) == len(groups) and a.pinned[0] == groups[0]
    assert pickle.loads(pickle.dumps(a.pinned)) == groups
    assert type(copy.deepcopy(a).pinned) is tuple


# ----------------------------------------------------------------------- 1. chain
def test_chain():
    a = analyse(M.chain)
    assert membership(a) == expect(
        (8, {"conv1.out": 1, "bn1.channels": 1, "conv2.in": 1}),
        (4, {"conv2.out": 1, "bn2.channels": 1, "fc.in": 1}),
    )
    u = unit_with(a, "conv1.out")
    assert positions(u, "conv2.in") == ident(8) == positions(u, "bn1.channels")
    assert pinned_positions(a) == pinned_whole(conv1__in=3, fc__out=10)
    assert "model output" in reasons_of(a, "fc.out")
    assert [u.name for u in a.units] == ["conv1", "conv2"]  # graph order


# ------------------------------------------------------------------ 2-3. residuals
def test_residual_identity_stream_is_one_unit():
    a = analyse(M.residual_identity)
    stream = {"stem.out": 1, "bn.channels": 1, "fc.in": 1}
    for b in ("blocks.0", "blocks.1"):
        stream.update({f"{b}.conv1.in": 1, f"{b}.conv2.out": 1, f"{b}.bn2.channels": 1})
    hidden = [(4, {f"{b}.conv1.out": 1, f"{b}.bn1.channels": 1, f"{b}.conv2.in": 1})
              for b in ("blocks.0", "blocks.1")]
    assert membership(a) == expect((8, stream), *hidden)
    u = unit_with(a, "stem.out")
    assert all(p.tolist() == ident(8) for _, p in u.members)
    assert pinned_positions(a) == pinned_whole(stem__in=3, fc__out=10)


def test_residual_projection_shortcut_joins_stream():
    a = analyse(M.residual_projection)
    assert membership(a) == expect(
        (4, {"stem.out": 1, "bn.channels": 1, "blocks.0.conv1.in": 1,
             "blocks.0.shortcut.0.in": 1}),
        (6, {"blocks.0.conv1.out": 1, "blocks.0.bn1.channels": 1, "blocks.0.conv2.in": 1}),
        (8, {"blocks.0.conv2.out": 1, "blocks.0.bn2.channels": 1, "blocks.0.shortcut.0.out": 1,
             "blocks.0.shortcut.1.channels": 1, "fc.in": 1}),
    )
    assert pinned_positions(a) == pinned_whole(stem__in=3, fc__out=10)


# ----------------------------------------------------------------- 4-5. concatenation
def test_dense_concat_splits_consumer_input():
    a = analyse(M.dense_concat)
    assert membership(a) == expect(
        (4, {"conv_a.out": 1, "conv_b.in": 1, "conv_c.in": 1}),
        (2, {"conv_b.out": 1, "conv_c.in": 1}),
    )
    assert positions(unit_with(a, "conv_a.out"), "conv_c.in") == ident(4)
    assert positions(unit_with(a, "conv_b.out"), "conv_c.in") == [[4], [5]]
    assert pinned_positions(a) == pinned_whole(conv_a__in=3, conv_c__out=5)


def test_inception_three_branches():
    a = analyse(M.inception_concat)
    assert membership(a) == expect(
        (8, {"stem.out": 1, "b1.in": 1, "b2.in": 1, "b3.in": 1}),
        (2, {"b1.out": 1, "head.in": 1}),
        (3, {"b2.out": 1, "head.in": 1}),
        (4, {"b3.out": 1, "head.in": 1}),
    )
    assert positions(unit_with(a, "b1.out"), "head.in") == column(range(0, 2))
    assert positions(unit_with(a, "b2.out"), "head.in") == column(range(2, 5))
    assert positions(unit_with(a, "b3.out"), "head.in") == column(range(5, 9))


def test_concat_of_concats():
    a = analyse(M.concat_of_concats)
    assert membership(a) == expect(
        (2, {"a.out": 1, "head.in": 1}), (3, {"b.out": 1, "head.in": 1}),
        (4, {"c.out": 1, "head.in": 1}),
    )
    assert positions(unit_with(a, "c.out"), "head.in") == column(range(5, 9))
    assert pinned_positions(a) == pinned_whole(a__in=3, b__in=3, c__in=3, head__out=5)


def test_add_of_concats_with_different_split_points():
    # cat([a(4), b(4)]) + cat([c(2), d(6)]): position p joins the p-th channel of each side:
    # p 0-1: a0-1 ~ c0-1; p 2-3: a2-3 ~ d0-1; p 4-7: b0-3 ~ d2-5.
    a = analyse(M.add_of_concats)
    assert membership(a) == expect(
        (2, {"a.out": 1, "c.out": 1, "e.in": 1}),
        (2, {"a.out": 1, "d.out": 1, "e.in": 1}),
        (4, {"b.out": 1, "d.out": 1, "e.in": 1}),
    )
    ac = unit_with(a, "a.out", "c.out")
    assert (positions(ac, "a.out"), positions(ac, "c.out"), positions(ac, "e.in")) == (
        [[0], [1]], [[0], [1]], [[0], [1]])
    ad = unit_with(a, "a.out", "d.out")
    assert (positions(ad, "a.out"), positions(ad, "d.out"), positions(ad, "e.in")) == (
        [[2], [3]], [[0], [1]], [[2], [3]])
    bd = unit_with(a, "b.out")
    assert (positions(bd, "b.out"), positions(bd, "d.out"), positions(bd, "e.in")) == (
        ident(4), column(range(2, 6)), column(range(4, 8)))


def test_tensor_concatenated_with_itself():
    a = analyse(M.self_concat)
    assert membership(a) == expect((4, {"conv1.out": 1, "conv2.in": 2}))
    u = a.units[0]
    assert positions(u, "conv2.in") == [[k, k + 4] for k in range(4)]
    assert pinned_positions(a) == pinned_whole(conv1__in=3, conv2__out=5)


# --------------------------------------------------------------- 6. split / slice
@pytest.mark.parametrize(("builder", "first"), [
    (M.slice_channels, 4), (M.split_channels, 3), (M.chunk_channels, 4),
])
def test_split_channels_feed_different_convs(builder, first):
    a = analyse(builder)
    rest = 8 - first
    assert membership(a) == expect(
        (first, {"conv0.out": 1, "conv_a.in": 1}),
        (rest, {"conv0.out": 1, "conv_b.in": 1}),
        (2, {"conv_a.out": 1, "conv_b.out": 1, "conv_c.in": 1}),
    )
    assert positions(unit_with(a, "conv_a.in"), "conv0.out") == column(range(first))
    assert positions(unit_with(a, "conv_b.in"), "conv0.out") == column(range(first, 8))
    assert positions(unit_with(a, "conv_b.in"), "conv_b.in") == ident(rest)
    assert pinned_positions(a) == pinned_whole(conv0__in=3, conv_c__out=3)
    # the split sizes / slice bounds count the kept channels of the two conv0 units
    ua, ub = (a.units.index(unit_with(a, s)) for s in ("conv_a.in", "conv_b.in"))
    parts = [[(int(u), int(c)) for u, c in zip(p.unit, p.channel, strict=True)]
             for site in a.resize_sites for p in site.parts]
    if builder is M.slice_channels:  # x[:, :4] stop and x[:, 4:] start: both count 0..3
        assert sorted(s.kind for s in a.resize_sites) == ["slice", "slice"]
        assert parts == [[(ua, k) for k in range(4)]] * 2
    else:
        (site,) = a.resize_sites
        assert (site.kind, site.where) == ("split", (1,))
        assert parts == [[(ua, k) for k in range(first)], [(ub, k) for k in range(rest)]]


# ---------------------------------------------------------------- 7. grouped convs
def test_depthwise_ties_in_and_out():
    a = analyse(M.depthwise)
    assert membership(a) == expect(
        (8, {"0.out": 1, "1.channels": 1, "3.in": 1, "3.out": 1, "4.channels": 1, "6.in": 1}),
    )
    assert all(p.tolist() == ident(8) for _, p in a.units[0].members)
    assert pinned_positions(a) == pinned_whole(**{"0__in": 3, "6__out": 6})


def test_depthwise_with_multiplier():
    # output channel o of the depthwise conv reads input channel o // 2
    a = analyse(M.depthwise_multiplier)
    assert membership(a) == expect((4, {"0.out": 1, "1.in": 1, "1.out": 2, "2.in": 2}))
    u = a.units[0]
    assert positions(u, "1.in") == ident(4)
    assert positions(u, "1.out") == [[2 * k, 2 * k + 1] for k in range(4)]
    assert positions(u, "2.in") == [[2 * k, 2 * k + 1] for k in range(4)]


def test_group_conv_ties_channel_j_of_each_group():
    a = analyse(M.group_conv)
    assert membership(a) == expect((4, {"0.out": 2, "1.in": 2}), (3, {"1.out": 2, "2.in": 2}))
    assert positions(unit_with(a, "1.in"), "1.in") == [[j, j + 4] for j in range(4)]
    assert positions(unit_with(a, "1.in"), "0.out") == [[j, j + 4] for j in range(4)]
    assert positions(unit_with(a, "1.out"), "1.out") == [[j, j + 3] for j in range(3)]
    assert positions(unit_with(a, "1.out"), "2.in") == [[j, j + 3] for j in range(3)]


# ------------------------------------------------------------------------ 8. norms
def test_group_norm_ties_across_groups():
    a = analyse(M.group_norm)
    assert membership(a) == expect((4, {"0.out": 2, "1.channels": 2, "3.in": 2}))
    assert all(p.tolist() == [[j, j + 4] for j in range(4)] for _, p in a.units[0].members)


def test_layer_norm_channels_last():
    a = analyse(M.layer_norm_channels_last)
    assert membership(a) == expect(
        (8, {"conv0.out": 1, "ln.channels": 1, "fc1.in": 1}),
        (16, {"fc1.out": 1, "fc2.in": 1}),
        (8, {"fc2.out": 1, "conv1.in": 1}),
    )
    assert pinned_positions(a) == pinned_whole(conv0__in=3, conv1__out=4)


def test_instance_norm_affine():
    a = analyse(M.instance_norm)
    assert membership(a) == expect((8, {"0.out": 1, "1.channels": 1, "2.in": 1}))


# --------------------------------------------------------------- 9. squeeze-excitation
@pytest.mark.parametrize("builder", [M.se_conv, M.se_linear], ids=["conv", "linear"])
def test_squeeze_excitation(builder):
    a = analyse(builder)
    assert membership(a) == expect(
        (8, {"conv0.out": 1, "fc1.in": 1, "fc2.out": 1, "conv1.in": 1}),
        (2, {"fc1.out": 1, "fc2.in": 1}),
    )
    assert positions(unit_with(a, "conv0.out"), "fc2.out") == ident(8)
    assert pinned_positions(a) == pinned_whole(conv0__in=3, conv1__out=4)


# ------------------------------------------------------------- 10. flatten → Linear
@pytest.mark.parametrize("how", ["module", "function", "view_size", "view_literal"])
def test_flatten_to_linear(how):
    a = analyse(M.flatten_linear, how)
    assert membership(a) == expect((4, {"conv.out": 1, "fc.in": 16}))
    u = a.units[0]
    assert positions(u, "fc.in") == [list(range(c * 16, c * 16 + 16)) for c in range(4)]
    assert pinned_positions(a) == pinned_whole(conv__in=3, fc__out=10)
    if how == "view_literal":  # x.view(-1, 64): the literal 64 must follow the conv unit
        (site,) = a.resize_sites
        assert site.kind == "arg" and site.where == ((2,),)  # node.args[2] is the 64
        (part,) = site.parts
        assert part.unit.tolist() == [0] * 64
        assert part.channel.tolist() == [c for c in range(4) for _ in range(16)]
    else:
        assert a.resize_sites == ()


# -------------------------------------------------------------- 11. channel shuffle
def test_channel_shuffle_follows_the_permutation():
    a = analyse(M.channel_shuffle)
    # view(n, 2, 4): channel c = g*4 + i; transpose → position 2*i + g of conv1's input
    perm = {g * 4 + i: 2 * i + g for g in range(2) for i in range(4)}
    assert membership(a) == expect((4, {"conv0.out": 2, "conv1.in": 2}))
    u = a.units[0]
    outs, ins = positions(u, "conv0.out"), positions(u, "conv1.in")
    for out_row, in_row in zip(outs, ins, strict=True):
        assert sorted(perm[p] for p in out_row) == sorted(in_row)
    # every group keeps the same channels: channel j of group 0 with channel j of group 1
    assert sorted(map(sorted, outs)) == [[j, j + 4] for j in range(4)]
    # the literals 4 (channels per group) and 8 (channels) follow the unit
    sites = {s.node: s for s in a.resize_sites}
    assert {s.where for s in sites.values()} == {((3,),), ((2,),)}  # node.args paths
    for site in sites.values():
        (part,) = site.parts
        assert (part.unit == 0).all() and len(part) in (4, 8)


# ------------------------------------------------------------ 12. pooling, reductions
def test_pooling_and_activations_keep_units():
    a = analyse(M.pooling)
    assert membership(a) == expect(
        (4, {"conv0.out": 1, "conv1.in": 1}), (6, {"conv1.out": 1, "conv2.in": 1}),
        (5, {"conv2.out": 1, "fc.in": 1}),
    )
    assert pinned_positions(a) == pinned_whole(conv0__in=3, fc__out=3)


def test_mean_over_channels_pins():
    a = analyse(M.mean_over_channels)
    assert a.units == ()
    assert pinned_positions(a) == pinned_whole(conv0__in=3, conv0__out=4, conv1__in=1,
                                               conv1__out=2)
    assert any("mean" in r and "reduces" in r for r in reasons_of(a, "conv0.out"))


# ------------------------------------------------------------ 13. other conv kinds
@pytest.mark.parametrize(("builder", "expected", "pinned"), [
    (M.conv1d_chain, [(8, {"0.out": 1, "1.channels": 1, "3.in": 1})], {"0__in": 3, "3__out": 4}),
    (M.conv3d_chain, [(4, {"0.out": 1, "1.channels": 1, "2.in": 1})], {"0__in": 3, "2__out": 2}),
    (M.conv_transpose_chain, [(8, {"0.out": 1, "1.in": 1}), (4, {"1.out": 1, "2.in": 1})],
     {"0__in": 3, "2__out": 2}),
], ids=["conv1d", "conv3d", "conv_transpose2d"])
def test_other_conv_kinds(builder, expected, pinned):
    a = analyse(builder)
    assert membership(a) == expect(*expected)
    assert pinned_positions(a) == pinned_whole(**pinned)


# ------------------------------------------------------------- 14. Linear on last dim
@pytest.mark.parametrize(("builder", "out"), [(M.linear_3d, 6), (M.linear_4d, 3)],
                         ids=["3d", "4d"])
def test_linear_on_last_dim(builder, out):
    a = analyse(builder)
    assert membership(a) == expect((8, {"0.out": 1, "2.in": 1}))
    assert pinned_positions(a) == pinned_whole(**{"0__in": 6, "2__out": out})


def test_token_linear_does_not_join_channel_unit():
    # tok mixes the token axis: its input is the model's (inert) token axis and its output
    # token axis reaches the model output, so both of its slots are pinned; fc0's channels
    # pass through both transposes into fc1.
    a = analyse(M.token_mixing)
    assert membership(a) == expect((8, {"fc0.out": 1, "fc1.in": 1}))
    assert pinned_positions(a) == pinned_whole(fc0__in=6, tok__in=5, tok__out=5, fc1__out=6)
    assert "model output" in reasons_of(a, "tok.out")


# -------------------------------------------------------- 15-16. shared weights, dim=2
def test_module_called_twice_joins_both_inputs():
    a = analyse(M.shared_conv)
    assert membership(a) == expect(
        (4, {"conv_a.out": 1, "conv_b.out": 1, "shared.in": 1}),
        (6, {"shared.out": 1, "head.in": 1}),
    )
    assert pinned_positions(a) == pinned_whole(conv_a__in=3, conv_b__in=3, head__out=2)


def test_concat_along_height_joins_channels():
    a = analyse(M.concat_height)
    assert membership(a) == expect((4, {"conv_a.out": 1, "conv_b.out": 1, "conv_c.in": 1}))
    assert all(p.tolist() == ident(4) for _, p in a.units[0].members)
    assert a.resize_sites == ()


# ---------------------------------------------------------- 17. unknown ops, opaque
@pytest.mark.parametrize(("builder", "op"), [(M.unknown_cumsum, "cumsum"),
                                             (M.unknown_fft, "fft2")], ids=["cumsum", "fft"])
def test_unknown_op_pins_what_it_touches(builder, op):
    a = analyse(builder)
    assert a.units == ()
    assert pinned_positions(a) == pinned_whole(conv0__in=3, conv0__out=4, conv1__in=4,
                                               conv1__out=6)
    assert any(op in r for r in reasons_of(a, "conv0.out"))
    assert any(op in name for name in a.unknown_ops)


def test_unknown_op_leaves_other_units_alone():
    a = analyse(M.unknown_on_side)
    assert membership(a) == expect((4, {"conv0.out": 1, "conv1.in": 1}))
    assert pinned_positions(a) == pinned_whole(conv0__in=3, conv1__out=6, conv2__in=6,
                                               conv2__out=2)
    assert any("cumsum" in r for r in reasons_of(a, "conv1.out"))


def test_unknown_op_has_its_public_name():
    a = analyse(M.unknown_cumsum)
    assert a.unknown_ops == ("torch.cumsum (node 'cumsum')",)


def test_untraceable_submodule_is_opaque_and_pins_its_boundary():
    a = analyse(M.opaque_gate)
    assert set(a.opaque) == {"gate"}
    assert membership(a) == expect((4, {"conv0.out": 1, "conv1.in": 1}))
    assert pinned_positions(a) == pinned_whole(conv0__in=3, conv1__out=6, conv2__in=6,
                                               conv2__out=2)
    assert any("gate" in r and "opaque" in r for r in reasons_of(a, "conv1.out"))


def test_untraceable_top_level_forward_raises():
    model, x = M.opaque_gate()
    gate = model.gate
    with pytest.raises(TraceFailedError, match="top-level forward"):
        trace_model(gate, x)


# ------------------------------------------------------------- 18. nothing to prune
def test_single_linear_has_no_units():
    a = analyse(M.single_linear)
    assert a.units == ()
    assert pinned_positions(a) == pinned_whole(fc__in=4, fc__out=3)
    assert "model output" in reasons_of(a, "fc.out")
    assert any("fc" in r and "not prunable" in r for r in reasons_of(a, "fc.in"))


# ------------------------------------------------------------ parameters in forward
def test_parameter_used_directly_joins_the_unit():
    a = analyse(M.param_scale)
    assert membership(a) == expect((4, {"conv0.out": 1, "scale.dim1": 1, "conv1.in": 1}))


# -------------------------------------------------------------------- known bugs
def test_single_output_feature_is_pinned():
    a = analyse(M.scalar_head)
    assert membership(a) == expect((8, {"0.out": 1, "2.in": 1}))
    assert pinned_positions(a) == pinned_whole(**{"0__in": 4, "2__out": 1})


def test_one_channel_bottleneck_is_pinned():
    a = analyse(M.one_channel_bottleneck)
    assert a.units == ()
    assert pinned_positions(a) == pinned_whole(**{"0__in": 3, "0__out": 1, "1__in": 1,
                                                  "1__out": 4})


def test_pinned_reasons_are_distinct():
    a = analyse(M.two_heads)
    assert membership(a) == expect((8, {"conv.out": 1, "bn.channels": 1, "head.in": 1}))
    for group in a.pinned:
        assert len(set(group.reasons)) == len(group.reasons), group


def test_broadcast_pin_reason_says_why():
    a = analyse(M.param_full_size)
    assert membership(a) == expect((4, {"conv0.out": 1, "pos.dim1": 1, "conv1.in": 1}))
    assert set(pinned_positions(a)) == {"conv0.in", "pos.dim2", "pos.dim3", "conv1.out"}
    bare = re.compile(r"^\S+ \(node '\w+'\)$")
    assert all(not bare.match(r) for r in reasons_of(a, "pos.dim2"))
