"""Grouping on segments of element ids gives exactly what grouping single elements gives.

The single-element path (``group_units(..., segments=False)``) is the oracle: it is the
plain union of every joined pair. Checked on random element spaces built to stress the
segment cuts (overlapping, shifted, reversed and permuted joins, pins inside segments),
on random fuzz networks and on torchvision models; plus the cases where segments are not
worth it and the single-element path runs instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from fuzz_models import random_networks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxrazor.analysis.context import RuleContext
from fxrazor.analysis.elements import ElementSpace
from fxrazor.analysis.grouping import group_units
from fxrazor.analysis.result import Slot
from fxrazor.analysis.segments import segment
from fxrazor.passes.discover_units import apply_rules
from fxrazor.trace.tracer import trace_model


def assert_same_grouping(space: ElementSpace, slots: list[tuple[Slot, np.ndarray]]) -> None:
    fast = group_units(space, slots, segments=True)  # on segments, however short
    plain = group_units(space, slots, segments=False)
    units_a, pinned_a, unit_a, chan_a, labels_a = fast
    units_b, pinned_b, unit_b, chan_b, labels_b = plain
    np.testing.assert_array_equal(labels_a, labels_b)
    np.testing.assert_array_equal(unit_a, unit_b)
    np.testing.assert_array_equal(chan_a, chan_b)
    assert [(u.name, u.num_channels) for u in units_a] == \
        [(u.name, u.num_channels) for u in units_b]
    for ua, ub in zip(units_a, units_b, strict=True):
        assert [s for s, _ in ua.members] == [s for s, _ in ub.members]
        for (_, pa), (_, pb) in zip(ua.members, ub.members, strict=True):
            assert pa.dtype == pb.dtype and pa.flags.c_contiguous
            np.testing.assert_array_equal(pa, pb)
    assert tuple(pinned_a) == tuple(pinned_b)


def _analysis(model: torch.nn.Module, x: torch.Tensor) -> RuleContext:
    return apply_rules(trace_model(model, x))


# ---------------------------------------------------------------------------- random spaces
@st.composite
def element_spaces(draw: Any) -> tuple[ElementSpace, list[tuple[Slot, np.ndarray]]]:
    """Layer slots of random widths joined by random equal-length pieces of their ids."""
    space = ElementSpace()
    slots = []
    for i in range(draw(st.integers(1, 7))):
        size = draw(st.integers(1, 12))
        role = draw(st.sampled_from(["out", "in", "channels"]))
        slots.append((Slot(f"layer{i}", role, size), space.fresh(size)))
    extra = space.fresh(draw(st.integers(0, 6)))  # elements in no slot (tensor dims)
    pool = [ids for _, ids in slots] + ([extra] if len(extra) else [])
    for _ in range(draw(st.integers(0, 10))):
        a, b = draw(st.sampled_from(pool)), draw(st.sampled_from(pool))
        n = draw(st.integers(1, min(len(a), len(b))))
        i = draw(st.integers(0, len(a) - n))
        j = draw(st.integers(0, len(b) - n))
        left, right = a[i:i + n], b[j:j + n]
        kind = draw(st.sampled_from(["range", "range", "reversed", "permuted"]))
        if kind == "reversed":
            right = right[::-1].copy()
        elif kind == "permuted":
            right = right[draw(st.permutations(range(n)))]
        space.join(left, right)
    for _ in range(draw(st.integers(0, 3))):
        ids = draw(st.sampled_from(pool))
        start = draw(st.integers(0, len(ids) - 1))
        space.pin(ids[start:draw(st.integers(start + 1, len(ids)))], f"pin {start}")
    return space, slots


@settings(max_examples=300, deadline=None, derandomize=True)
@given(case=element_spaces())
def test_segments_match_single_elements_on_random_spaces(case: tuple) -> None:
    assert_same_grouping(*case)


def test_shifted_self_join_cuts_every_element() -> None:
    # a[0:5] ~ a[1:6]: every element of a is one component; cuts spread to every offset
    space = ElementSpace()
    a, b = space.fresh(6), space.fresh(6)
    space.join(a[:5], a[1:])
    space.join(a, b)
    slots = [(Slot("a", "out", 6), a), (Slot("b", "in", 6), b)]
    seg = segment(space, [a, b], always=True)
    assert seg is not None
    assert set(seg.labels.tolist()) == {0}
    assert segment(space, [a, b]) is None  # single elements: segments do not pay
    assert_same_grouping(space, slots)


def test_a_pin_inside_a_joined_range_cuts_both_sides() -> None:
    space = ElementSpace()
    a, b = space.fresh(8), space.fresh(8)
    space.join(a, b)
    space.pin(b[2:5], "kept")
    seg = segment(space, [a, b], always=True)
    assert seg is not None and seg.width.tolist() == [2, 3, 3, 2, 3, 3]
    slots = [(Slot("a", "out", 8), a), (Slot("b", "in", 8), b)]
    units, pinned, *_ = group_units(space, slots)
    assert [u.num_channels for u in units] == [5]
    assert units[0].members[0][1].ravel().tolist() == [0, 1, 5, 6, 7]
    assert [g.num_positions for g in pinned] == [6] and pinned[0].reasons == ("kept",)
    assert_same_grouping(space, slots)


def test_scattered_joins_resolve_single_elements() -> None:
    # a channel shuffle joins single ids: segments would not be longer than one element
    space = ElementSpace()
    a, b = space.fresh(64), space.fresh(64)
    space.join(a, b.reshape(2, 32).T.ravel())
    assert segment(space, [a, b]) is None
    assert_same_grouping(space, [(Slot("a", "out", 64), a), (Slot("b", "in", 64), b)])


# ---------------------------------------------------------------------------- networks
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(net=random_networks())
def test_segments_match_single_elements_on_fuzz_networks(net: tuple) -> None:
    model, x, _ = net
    ctx = _analysis(model, x)
    assert_same_grouping(ctx.space, list(ctx.slots.values()))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "densenet121", "googlenet",
                                  "shufflenet_v2_x0_5", "vgg11", "swin_t", "vit_b_16"])
def test_segments_match_single_elements_on_torchvision(name: str) -> None:
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.get_model(name, weights=None).eval()
    ctx = _analysis(model, torch.randn(1, 3, 224, 224))
    slots = list(ctx.slots.values())
    used = segment(ctx.space, [ids for _, ids in slots]) is not None
    # the CNNs and transformers resolve on segments; the shuffle and the 7x7 flatten not
    assert used == (name not in ("shufflenet_v2_x0_5", "vgg11"))
    assert_same_grouping(ctx.space, slots)
    auto = group_units(ctx.space, slots)
    assert [u.name for u in auto[0]] == [u.name for u in group_units(ctx.space, slots,
                                                                       segments=False)[0]]
