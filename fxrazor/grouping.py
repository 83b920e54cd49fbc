"""Group connected channel elements into units.

After the joins are resolved, every connected component of elements is one *channel* in
the pruning sense: keeping it keeps each layer position it touches. Components that touch
the same layer slots the same number of times are channels of the same unit (for a plain
conv → bn → conv chain: the conv's C output channels). Components that contain a pinned
element, or touch no producing layer, can never be removed.

Example:
    >>> from fxrazor.channels import ElementSpace
    >>> from fxrazor.analysis import Slot
    >>> space = ElementSpace()
    >>> out, inp = space.fresh(4), space.fresh(4)
    >>> space.join(out, inp)
    >>> units, pinned, *_ = group_units(space, [(Slot("a", "out", 4), out), (Slot("b", "in", 4), inp)])
    >>> units[0].name, units[0].num_channels, len(units[0].members)
    ('a', 4, 2)
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from fxrazor.analysis import PinnedGroup, Slot, UnitSpec
from fxrazor.channels import ElementSpace

__all__ = ["group_units"]

_MAX_REASONS = 4


def _runs(labels: np.ndarray, slots: list[tuple[Slot, np.ndarray]]):
    """Sort every slot position by (component, slot, position) and cut it into runs of one
    (component, slot) pair."""
    comp = np.concatenate([labels[ids] for _, ids in slots])
    slot = np.concatenate([np.full(len(ids), i) for i, (_, ids) in enumerate(slots)])
    pos = np.concatenate([np.arange(len(ids)) for _, ids in slots])
    order = np.lexsort((pos, slot, comp))
    comp, slot, pos = comp[order], slot[order], pos[order]
    change = np.r_[True, (comp[1:] != comp[:-1]) | (slot[1:] != slot[:-1])]
    starts = np.flatnonzero(change)
    lengths = np.diff(np.r_[starts, len(comp)])
    return comp, slot, pos, starts, lengths


def _pinned_components(space: ElementSpace, labels: np.ndarray) -> dict[int, set[int]]:
    """Map each pinned component to the indices of the pin reasons that reached it."""
    reasons: dict[int, set[int]] = defaultdict(set)
    for k, (ids, _) in enumerate(space.pins):
        for c in np.unique(labels[ids]).tolist():
            reasons[c].add(k)
    return reasons


def group_units(space: ElementSpace, slots: list[tuple[Slot, np.ndarray]]):
    """Resolve components and group them.

    Returns:
        ``(units, pinned_groups, comp_unit, comp_channel, labels)``: the unit specs in graph
        order, the pinned groups, and for each component label its unit index and channel
        (-1 when pinned), plus the element → component labels.
    """
    labels = space.components()
    comp_unit = np.full(space.size, -1, dtype=np.int64)
    comp_chan = np.full(space.size, -1, dtype=np.int64)
    if not slots:
        return (), (), comp_unit, comp_chan, labels
    pin_reasons = _pinned_components(space, labels)
    comp, slot, pos, starts, lengths = _runs(labels, slots)
    run_comp, run_slot = comp[starts], slot[starts]
    comp_first = np.flatnonzero(np.r_[True, run_comp[1:] != run_comp[:-1]])
    comp_last = np.r_[comp_first[1:], len(run_comp)]
    by_signature: dict[tuple, list[int]] = defaultdict(list)
    pinned_by_slots: dict[tuple, list[int]] = defaultdict(list)
    no_producer = "no layer produces these channels"
    for a, b in zip(comp_first.tolist(), comp_last.tolist(), strict=True):
        c = int(run_comp[a])
        sig = tuple(zip(run_slot[a:b].tolist(), lengths[a:b].tolist(), strict=True))
        if c not in pin_reasons and not any(slots[s][0].is_producer for s, _ in sig):
            pin_reasons[c] = {-1}
        if c in pin_reasons:
            pinned_by_slots[tuple(s for s, _ in sig)].append(a)
        else:
            by_signature[sig].append(a)
    reason_text = [r for _, r in space.pins] + [no_producer]
    units = _build_units(by_signature, slots, run_comp, starts, pos, comp_unit, comp_chan)
    pinned = tuple(
        PinnedGroup(
            tuple(slots[s][0] for s in key),
            int(sum(lengths[a:a + len(key)].sum() for a in firsts)),
            tuple(dict.fromkeys(reason_text[k] for k in sorted(
                set().union(*(pin_reasons[int(run_comp[a])] for a in firsts)))))[:_MAX_REASONS],
        )
        for key, firsts in pinned_by_slots.items()
    )
    return units, pinned, comp_unit, comp_chan, labels


def _build_units(by_signature, slots, run_comp, starts, pos, comp_unit, comp_chan):
    specs = []
    for sig, firsts in by_signature.items():
        first_runs = np.asarray(firsts)
        # channel order: position in the earliest slot of the signature
        order = np.argsort(pos[starts[first_runs]], kind="stable")
        first_runs = first_runs[order]
        members = []
        for j, (s, r) in enumerate(sig):
            run_start = starts[first_runs + j]
            members.append((slots[s][0], pos[run_start[:, None] + np.arange(r)]))
        producer = min(j for j, (s, _) in enumerate(sig) if slots[s][0].is_producer)
        specs.append((sig[producer][0], members, run_comp[first_runs], producer))
    specs.sort(key=lambda item: (item[0], int(item[1][item[3]][1].min())))
    units, names = [], set()
    for index, (_, members, comps, producer) in enumerate(specs):
        comp_unit[comps] = index
        comp_chan[comps] = np.arange(len(comps))
        name = _unit_name(members[producer], names)
        units.append(UnitSpec(name, len(comps), tuple(members)))
    return tuple(units)


def _unit_name(member: tuple[Slot, np.ndarray], taken: set[str]) -> str:
    slot, positions = member
    base = slot.target if slot.role == "out" else f"{slot.target}:{slot.role}"
    if positions.size != slot.size:
        base = f"{base}[{int(positions.min())}:{int(positions.max()) + 1}]"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}#{k}"
    taken.add(name)
    return name
