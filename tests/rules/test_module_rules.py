"""Module rules (convolutions, norms, Linear): exact units on small models.

Every expectation is worked out by hand from the model's structure (see the builders in
``tests/helpers/models.py``), never taken from the analysis itself.
"""

from __future__ import annotations

import models as M
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
