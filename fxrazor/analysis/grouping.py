"""Group connected channel elements into units.

After the joins are resolved, every connected component of elements is one *channel* in
the pruning sense: keeping it keeps each layer position it touches. Components that touch
the same layer slots the same number of times are channels of the same unit (for a plain
conv → bn → conv chain: the conv's C output channels). Components that contain a pinned
element, or touch no producing layer, can never be removed.

Example:
    >>> from fxrazor.analysis.elements import ElementSpace
    >>> from fxrazor.analysis.result import Slot
    >>> space = ElementSpace()
    >>> out, inp = space.fresh(4), space.fresh(4)
    >>> space.join(out, inp)
    >>> units, pinned, *_ = group_units(space, [(Slot("a", "out", 4), out), (Slot("b", "in", 4), inp)])
    >>> units[0].name, units[0].num_channels, len(units[0].members)
    ('a', 4, 2)
"""

from __future__ import annotations

import functools

import numpy as np

from fxrazor.analysis.elements import ElementSpace, connected_labels
from fxrazor.analysis.result import PinnedGroup, PinnedGroups, Slot, UnitSpec
from fxrazor.analysis.segments import segment

__all__ = ["group_units"]

_MAX_REASONS = 4


def _element_entries(labels: np.ndarray, slots: list[tuple[Slot, np.ndarray]]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every slot position as an entry of one element: (component, slot, position)."""
    lens = np.array([len(ids) for _, ids in slots], dtype=np.int64)
    comp = labels[np.concatenate([ids for _, ids in slots])]
    slot = np.repeat(np.arange(len(slots)), lens)
    pos = np.arange(len(comp)) - np.repeat(np.cumsum(lens) - lens, lens)
    return comp, slot, pos


def _runs(comp: np.ndarray, slot: np.ndarray, pos: np.ndarray, n_slots: int):
    """Sort the entries by (component, slot, position) and cut them into runs of one
    (component, slot) pair: the order, the sorted arrays, run starts and lengths."""
    # Entries come slot after slot with ascending positions: one stable sort suffices.
    order = np.argsort(comp * n_slots + slot, kind="stable")
    comp, slot, pos = comp[order], slot[order], pos[order]
    change = np.r_[True, (comp[1:] != comp[:-1]) | (slot[1:] != slot[:-1])]
    starts = np.flatnonzero(change)
    lengths = np.diff(np.r_[starts, len(comp)])
    return order, comp, slot, pos, starts, lengths


def _sequence_hash(codes: np.ndarray, index_in_comp: np.ndarray, comp_first: np.ndarray,
                   prime: int) -> np.ndarray:
    """A polynomial hash of each component's run codes (uint64, wrapping)."""
    powers = np.full(int(index_in_comp.max()) + 1, prime, dtype=np.uint64)
    powers[0] = 1
    with np.errstate(over="ignore"):
        powers = np.cumprod(powers, dtype=np.uint64)  # prime**k, wrapping like the terms
        terms = (codes.astype(np.uint64) + np.uint64(2)) * powers[index_in_comp]
    return np.add.reduceat(terms, comp_first)


def group_sequences(codes: np.ndarray, comp_first: np.ndarray, n_runs: np.ndarray,
                    select: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group the selected components by their exact sequence of run codes.

    Returns ``(group, reps)``: each component's group index (-1 if not selected) and, per
    group, the index of one member component. Hashes find candidates in linear time and
    memory; an exact comparison of every run then confirms them.
    """
    index_in_comp = np.arange(len(codes)) - np.repeat(comp_first, n_runs)
    h1 = _sequence_hash(codes, index_in_comp, comp_first, 1_000_003)
    h2 = _sequence_hash(codes, index_in_comp, comp_first, 998_244_353)
    chosen = np.flatnonzero(select)
    group = np.full(len(comp_first), -1, dtype=np.int64)
    if not len(chosen):
        return group, chosen
    order = chosen[np.lexsort((n_runs[chosen], h2[chosen], h1[chosen]))]
    new = np.r_[True, (h1[order][1:] != h1[order][:-1]) | (h2[order][1:] != h2[order][:-1])
                | (n_runs[order][1:] != n_runs[order][:-1])]
    group[order] = np.cumsum(new) - 1
    reps = order[new]
    run_group = np.repeat(group, n_runs)
    mine = run_group >= 0
    rep_run = comp_first[reps][run_group[mine]] + index_in_comp[mine]
    if not np.array_equal(codes[mine], codes[rep_run]):
        raise RuntimeError("channel grouping hash collision")  # 2 x 64-bit: not expected
    return group, reps


def _pin_reasons(pin_labels: np.ndarray, pin_sizes: list[int], comp_ids: np.ndarray,
                 group_of: np.ndarray, n_groups: int) -> list[set[int]]:
    """For each pinned group, the indices of the pin reasons that reached it (all pins at
    once: one lookup and one ``unique`` instead of one per pin). ``pin_labels`` holds the
    components of every pin's elements, pin after pin (``pin_sizes`` of them each)."""
    reasons: list[set[int]] = [set() for _ in range(n_groups)]
    if not pin_sizes or not len(comp_ids):
        return reasons
    n_pins = len(pin_sizes)
    pin = np.repeat(np.arange(n_pins), pin_sizes)
    where = np.minimum(np.searchsorted(comp_ids, pin_labels), len(comp_ids) - 1)
    group = np.where(comp_ids[where] == pin_labels, group_of[where], -1)  # with slots only
    hit = group >= 0
    for code in np.unique(group[hit] * n_pins + pin[hit]).tolist():
        reasons[code // n_pins].add(code % n_pins)
    return reasons


def group_units(space: ElementSpace, slots: list[tuple[Slot, np.ndarray]],
                segments: bool | None = None):
    """Resolve components and group them.

    Args:
        space: the elements, joins and pins.
        slots: each layer slot with its element ids.
        segments: None resolves on segments of ids where that pays (see
            :mod:`fxrazor.analysis.segments`), True always on segments, False on single elements;
            all three give the same result.

    Returns:
        ``(units, pinned_groups, comp_unit, comp_channel, labels)``: the unit specs in graph
        order, the pinned groups, and for each component label its unit index and channel
        (-1 when pinned), plus the element → component labels.
    """
    comp_unit = np.full(space.size, -1, dtype=np.int64)
    comp_chan = np.full(space.size, -1, dtype=np.int64)
    if not slots:
        return (), (), comp_unit, comp_chan, space.components()
    joined = space.joined()
    seg = None if segments is False else \
        segment(space, [ids for _, ids in slots], joined, always=bool(segments))
    width: np.ndarray | None = None
    # pin_labels: the component of each pinned element (each pinned segment), pin after
    # pin, pin_counts of them each
    if seg is None:
        labels = connected_labels(space.size, *joined)
        comp, slot, pos = _element_entries(labels, slots)
        pin_labels = labels[np.concatenate([ids for ids, _ in space.pins])] \
            if space.pins else np.zeros(0, dtype=np.int64)
        pin_counts = [len(ids) for ids, _ in space.pins]
    else:
        labels, comp, slot, pos = seg.labels, seg.comp, seg.slot, seg.pos
        pin_labels, pin_counts = seg.pin_comps, seg.pin_counts.tolist()
    order, comp, slot, pos, starts, lengths = _runs(comp, slot, pos, len(slots))
    if seg is not None:
        width = seg.width[order][starts]
    run_comp, run_slot = comp[starts], slot[starts]
    comp_first, n_runs, pinned, no_producer = _flags(run_comp, run_slot, pin_labels, slots)
    signature = run_slot * (int(lengths.max()) + 1) + lengths
    units = _build_units(signature, ~pinned, comp_first, n_runs, slots, run_slot, lengths,
                         run_comp, starts, pos, width, comp_unit, comp_chan)
    # Worked out when read (summaries only), from what it needs kept aside: the pinned
    # components' runs (positions per run: a segment component's width times its count)
    # and the components each pin reaches.
    groups: PinnedGroups | tuple = ()
    if pinned.any():
        positions = lengths if width is None else lengths * width
        groups = PinnedGroups(functools.partial(
            _pinned_groups, _pinned_runs(pinned, run_comp[comp_first], comp_first, n_runs,
                                         positions, run_slot, no_producer),
            [s for s, _ in slots], pin_labels, pin_counts, [why for _, why in space.pins]))
    return units, groups, comp_unit, comp_chan, labels


def _flags(run_comp: np.ndarray, run_slot: np.ndarray, pin_labels: np.ndarray,
           slots: list[tuple[Slot, np.ndarray]]):
    """Per component of the runs: its first run, number of runs, whether it is pinned
    (by a pin or for want of a producing slot) and whether it has no producer."""
    comp_first = np.flatnonzero(np.r_[True, run_comp[1:] != run_comp[:-1]])
    n_runs = np.diff(np.r_[comp_first, len(run_comp)])
    pinned = np.isin(run_comp[comp_first], pin_labels)
    is_producer = np.array([s.is_producer for s, _ in slots])
    no_producer = ~np.logical_or.reduceat(is_producer[run_slot], comp_first) & ~pinned
    return comp_first, n_runs, pinned | no_producer, no_producer


def _pinned_runs(pinned, comp_ids, comp_first, n_runs, lengths, run_slot, no_producer):
    """The run arrays restricted to the pinned components: (component ids, first run,
    number of runs, run lengths, run slots, no-producer flags)."""
    chosen = np.flatnonzero(pinned)
    counts = n_runs[chosen]
    first = np.r_[0, np.cumsum(counts)[:-1]]
    runs = np.repeat(comp_first[chosen] - first, counts) + np.arange(int(counts.sum()))
    return (comp_ids[chosen], first, counts, lengths[runs], run_slot[runs],
            no_producer[chosen])


def _pinned_groups(runs, slots, pin_labels, pin_sizes, texts):
    """Pinned components grouped by the slots they touch, with their sizes and reasons."""
    comp_ids, comp_first, n_runs, lengths, run_slot, no_producer = runs
    inverse, reps = group_sequences(run_slot, comp_first, n_runs,
                                    np.ones(len(comp_ids), dtype=bool))
    keys = [run_slot[comp_first[r]:comp_first[r] + n_runs[r]] for r in reps]
    reasons = _pin_reasons(pin_labels, pin_sizes, comp_ids, inverse, len(keys))
    sizes = np.add.reduceat(lengths, comp_first)
    counts = np.bincount(inverse, weights=sizes, minlength=len(keys))
    orphan = np.zeros(len(keys), dtype=bool)
    orphan[np.unique(inverse[no_producer])] = True
    result = []
    for g, key in enumerate(keys):
        why = [texts[k] for k in sorted(reasons[g])]
        if orphan[g]:
            why.append("no layer produces these channels")
        result.append(PinnedGroup(tuple(slots[s] for s in key.tolist() if s >= 0),
                                  int(counts[g]), tuple(dict.fromkeys(why))[:_MAX_REASONS]))
    result.sort(key=lambda grp: [str(sl) for sl in grp.slots])
    return tuple(result)


def _build_units(signature, free, comp_first, n_runs, slots, run_slot, lengths, run_comp,
                 starts, pos, width, comp_unit, comp_chan):
    """Free components with identical (slot, count) signatures form one unit each.

    ``width`` (segments) is the number of channels of each run's component: offset k of
    a component of width w is the channel at label ``run_comp + k`` and positions
    ``pos + k``; None (single elements) means width 1 everywhere."""
    if not free.any():
        return ()
    group, reps = group_sequences(signature, comp_first, n_runs, free)
    chosen = np.flatnonzero(group >= 0)
    # channel order in a unit: position in the earliest slot of the signature (the
    # channels of one segment component are consecutive there, offset after offset)
    chosen = chosen[np.lexsort((pos[starts[comp_first[chosen]]], group[chosen]))]
    bounds = np.searchsorted(group[chosen], np.arange(len(reps) + 1)).tolist()
    specs = []
    for g, rep in enumerate(reps.tolist()):
        comps = chosen[bounds[g]:bounds[g + 1]]
        first, n = int(comp_first[rep]), int(n_runs[rep])
        run_slots = run_slot[first:first + n].tolist()
        cuts = [0, *np.cumsum(lengths[first:first + n]).tolist()]
        # A component's runs are consecutive in the sorted entry arrays, so all its
        # positions are one range: one gather per unit, then a slice per member.
        firsts = comp_first[comps]
        block = pos[starts[firsts][:, None] + np.arange(cuts[-1])]
        labels = run_comp[firsts]
        if width is not None and len(firsts) == 1:  # one segment component: a range
            offset = np.arange(int(width[firsts[0]]))
            block = block[0] + offset[:, None]
            labels = labels[0] + offset
        elif width is not None:
            w = width[firsts]
            row = np.repeat(np.arange(len(w)), w)
            offset = np.arange(len(row)) - np.repeat(np.cumsum(w) - w, w)
            block = block[row] + offset[:, None]
            labels = labels[row] + offset
        members = [(slots[s][0], np.ascontiguousarray(block[:, a:b]))
                   for s, a, b in zip(run_slots, cuts[:-1], cuts[1:], strict=True)]
        producer = next(j for j, (sl, _) in enumerate(members) if sl.is_producer)
        # units in graph order: by their first producing slot, then its first position
        specs.append(((run_slots[producer], int(members[producer][1].min())),
                      members[producer], members, labels))
    specs.sort(key=lambda item: item[0])
    units, names = [], set()
    for index, (_, producer_member, members, comps) in enumerate(specs):
        comp_unit[comps] = index
        comp_chan[comps] = np.arange(len(comps))
        units.append(UnitSpec(_unit_name(producer_member, names), len(comps), tuple(members)))
    return tuple(units)


def _unit_name(member: tuple[Slot, np.ndarray], taken: set[str]) -> str:
    slot, positions = member
    base = slot.target if slot.role == "out" else f"{slot.target}:{slot.role}"
    if slot.is_param:  # a weight read in the graph: named like a layer, by its module path
        owner, _, attr = slot.target.rpartition(".")
        base = owner if owner and attr in ("weight", "bias") else slot.target
    if positions.size != slot.size:
        base = f"{base}[{int(positions.min())}:{int(positions.max()) + 1}]"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}#{k}"
    taken.add(name)
    return name
