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


def _rows(values: np.ndarray, comp_first: np.ndarray, n_runs: np.ndarray) -> np.ndarray:
    """One row per component holding its runs' ``values``, padded with -1."""
    rows = np.full((len(comp_first), int(n_runs.max())), -1, dtype=np.int64)
    which = np.repeat(np.arange(len(comp_first)), n_runs)
    rows[which, np.arange(len(values)) - np.repeat(comp_first, n_runs)] = values
    return rows


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(rows, axis=0, return_inverse=True)``, via a row hash (much faster than
    sorting rows as byte strings), checked exactly afterwards."""
    h = np.zeros(len(rows), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in rows.T:
            h = h * np.uint64(1_000_003) + (column + 2).astype(np.uint64)
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    keys = rows[first]
    if not np.array_equal(keys[inverse], rows):  # a hash collision: take the slow path
        keys, inverse = np.unique(rows, axis=0, return_inverse=True)
    return keys, inverse.ravel()


def _pin_reasons(space: ElementSpace, labels: np.ndarray, comp_ids: np.ndarray,
                 group_of: np.ndarray, n_groups: int) -> list[set[int]]:
    """For each pinned group, the indices of the pin reasons that reached it."""
    reasons: list[set[int]] = [set() for _ in range(n_groups)]
    for k, (ids, _) in enumerate(space.pins):
        hit = np.searchsorted(comp_ids, np.unique(labels[ids]))
        hit = hit[(hit < len(comp_ids))]
        for g in np.unique(group_of[hit]).tolist():
            if g >= 0:
                reasons[g].add(k)
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
    comp, slot, pos, starts, lengths = _runs(labels, slots)
    run_comp, run_slot = comp[starts], slot[starts]
    comp_first = np.flatnonzero(np.r_[True, run_comp[1:] != run_comp[:-1]])
    n_runs = np.diff(np.r_[comp_first, len(run_comp)])
    comp_ids = run_comp[comp_first]  # sorted: runs are sorted by component
    pinned_labels = np.unique(np.concatenate([labels[ids] for ids, _ in space.pins])) \
        if space.pins else np.zeros(0, dtype=np.int64)
    pinned = np.isin(comp_ids, pinned_labels)
    is_producer = np.array([s.is_producer for s, _ in slots])
    no_producer = ~np.logical_or.reduceat(is_producer[run_slot], comp_first) & ~pinned
    pinned |= no_producer
    signature = _rows(run_slot * (int(lengths.max()) + 1) + lengths, comp_first, n_runs)
    units = _build_units(signature, ~pinned, comp_first, slots, run_slot, lengths, run_comp,
                         starts, pos, comp_unit, comp_chan)
    groups = _pinned_groups(space, labels, slots, signature, pinned, no_producer, comp_ids,
                            comp_first, n_runs, lengths, run_slot)
    return units, groups, comp_unit, comp_chan, labels


def _pinned_groups(space, labels, slots, signature, pinned, no_producer, comp_ids, comp_first,
                   n_runs, lengths, run_slot):
    """Pinned components grouped by the slots they touch, with their sizes and reasons."""
    if not pinned.any():
        return ()
    slot_rows = _rows(run_slot, comp_first, n_runs)[pinned]
    keys, inverse = _unique_rows(slot_rows)
    group_of = np.full(len(comp_ids), -1, dtype=np.int64)
    group_of[np.flatnonzero(pinned)] = inverse
    reasons = _pin_reasons(space, labels, comp_ids, group_of, len(keys))
    texts = [r for _, r in space.pins]
    sizes = np.add.reduceat(lengths, comp_first)[pinned]
    counts = np.bincount(inverse, weights=sizes, minlength=len(keys))
    orphan = np.zeros(len(keys), dtype=bool)
    orphan[np.unique(inverse[no_producer[pinned]])] = True
    result = []
    for g, key in enumerate(keys):
        why = [texts[k] for k in sorted(reasons[g])]
        if orphan[g]:
            why.append("no layer produces these channels")
        result.append(PinnedGroup(tuple(slots[s][0] for s in key.tolist() if s >= 0),
                                  int(counts[g]), tuple(dict.fromkeys(why))[:_MAX_REASONS]))
    result.sort(key=lambda grp: [str(sl) for sl in grp.slots])
    return tuple(result)


def _build_units(signature, free, comp_first, slots, run_slot, lengths, run_comp, starts,
                 pos, comp_unit, comp_chan):
    """Free components with identical (slot, count) signatures form one unit each."""
    if not free.any():
        return ()
    keys, inverse = _unique_rows(signature[free])
    firsts_all = comp_first[free]
    specs = []
    for g in range(len(keys)):
        first_runs = firsts_all[inverse == g]
        n = int((keys[g] >= 0).sum())
        # channel order: position in the earliest slot of the signature
        first_runs = first_runs[np.argsort(pos[starts[first_runs]], kind="stable")]
        members = []
        for j in range(n):
            run = first_runs + j
            r = int(lengths[run[0]])
            members.append((slots[int(run_slot[run[0]])][0],
                            pos[starts[run][:, None] + np.arange(r)]))
        producer = min(j for j, (sl, _) in enumerate(members) if sl.is_producer)
        order_key = int(run_slot[first_runs[0] + producer])
        specs.append((order_key, members, run_comp[first_runs], producer))
    specs.sort(key=lambda item: (item[0], int(item[1][item[3]][1].min())))
    units, names = [], set()
    for index, (_, members, comps, producer) in enumerate(specs):
        comp_unit[comps] = index
        comp_chan[comps] = np.arange(len(comps))
        units.append(UnitSpec(_unit_name(members[producer], names), len(comps), tuple(members)))
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
