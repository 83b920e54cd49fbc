"""Reading a channel analysis in tests: units as Counters of their member slots, positions,
pinned positions and reasons, so that expectations can be written out by hand."""

from __future__ import annotations

from collections import Counter

import numpy as np

from fxrazor.analysis.result import ChannelAnalysis, UnitSpec
from fxrazor.passes.discover_units import discover_units
from fxrazor.trace.tracer import trace_model

__all__ = ["analyse", "membership", "expect", "unit_with", "positions", "column",
           "pinned_positions", "pinned_whole", "reasons_of", "ident"]


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
