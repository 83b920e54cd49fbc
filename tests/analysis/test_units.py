"""Exact channel units of discover_units on small models, one test per pattern.

Every expectation below is worked out by hand from the model's structure (see the builders
in ``tests/helpers/models.py``), never taken from the analysis itself.
"""

from __future__ import annotations

import re

import models as M
import numpy as np
import pytest
from unit_checks import (
    analyse,
    expect,
    ident,
    membership,
    pinned_positions,
    pinned_whole,
    positions,
    reasons_of,
    unit_with,
)

from fxrazor.analysis.result import PinnedGroup
from fxrazor.errors import TraceFailedError
from fxrazor.trace.tracer import trace_model


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


# -------------------------------------------------------- 15-16. shared weights, dim=2
def test_module_called_twice_joins_both_inputs():
    a = analyse(M.shared_conv)
    assert membership(a) == expect(
        (4, {"conv_a.out": 1, "conv_b.out": 1, "shared.in": 1}),
        (6, {"shared.out": 1, "head.in": 1}),
    )
    assert pinned_positions(a) == pinned_whole(conv_a__in=3, conv_b__in=3, head__out=2)


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

