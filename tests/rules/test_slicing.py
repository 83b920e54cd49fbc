"""Slicing and joining rules (cat, stack, split, chunk, slicing): exact units on small models.

Every expectation is worked out by hand from the model's structure (see the builders in
``tests/helpers/models.py``), never taken from the analysis itself.
"""

from __future__ import annotations

import models as M
import pytest
from unit_checks import (
    analyse,
    column,
    expect,
    ident,
    membership,
    pinned_positions,
    pinned_whole,
    positions,
    unit_with,
)


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


def test_concat_along_height_joins_channels():
    a = analyse(M.concat_height)
    assert membership(a) == expect((4, {"conv_a.out": 1, "conv_b.out": 1, "conv_c.in": 1}))
    assert all(p.tolist() == ident(4) for _, p in a.units[0].members)
    assert a.resize_sites == ()
