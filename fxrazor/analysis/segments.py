"""The channel-element joins resolved on segments of element ids instead of single ids.

Element ids are handed out in ranges (``ElementSpace.fresh``), and nearly every join maps a
range of ids onto an equal range in order: a conv's output channels onto a norm's, the two
inputs of an add onto each other. Cut the id line wherever a join, a slot or a pin starts
or ends, then carry every cut that falls inside a joined range over to the same offset of
the range it is joined with, until no cut is new. The pieces between cuts, *segments*, are
then joined whole, offset for offset, so the element at offset k of a segment is connected
exactly to the elements at offset k of the segments it is joined with. Components,
unit signatures and channel order follow from a few hundred segments instead of tens of
thousands of elements (a small CNN), or millions (a 7B LLM).

Joins that scatter ids (a channel shuffle, a flatten of C×H×W features, whole attention
heads tied at each head-dim offset) break into many short ranges; there segments gain
nothing, and :func:`segment` returns None so that the caller resolves single elements.

Example:
    >>> from fxrazor.analysis.elements import ElementSpace
    >>> space = ElementSpace()
    >>> a, b = space.fresh(4), space.fresh(4)
    >>> space.join(a, b)
    >>> seg = segment(space, [a, b])
    >>> seg.labels.tolist(), seg.comp.tolist(), seg.width.tolist()
    ([0, 1, 2, 3, 0, 1, 2, 3], [0, 0], [4, 4])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fxrazor.analysis.elements import ElementSpace, connected_labels

__all__ = ["Segments", "segment"]

# Cuts travel one join per round; a chain this long means scattered ids, where single
# elements are cheaper.
_MAX_ROUNDS = 12
# Segments pay off when there are several elements per segment; a join with fewer than
# eight elements per range (a channel shuffle) is not even tried.
_MIN_ELEMENTS_PER_RANGE = 4
_MIN_ELEMENTS_PER_JOIN_RANGE = 8


@dataclass(frozen=True)
class Segments:
    """The resolved joins, and every slot cut into segments (*entries*).

    Attributes:
        labels: per element, the smallest element id connected to it (as
            ``ElementSpace.components``).
        comp, slot, pos, width: per entry, the label of its first element, the index of
            its slot, the slot position of its first element and its number of elements.
            The element at offset k of an entry has label ``comp + k`` and position
            ``pos + k``.
        pin_comps, pin_counts: for each segment of each pin, pin after pin
            (``pin_counts`` of them each), the label of its component's first element;
            pins cover whole segments, so such a component is pinned at every offset.
    """

    labels: np.ndarray
    comp: np.ndarray
    slot: np.ndarray
    pos: np.ndarray
    width: np.ndarray
    pin_comps: np.ndarray
    pin_counts: np.ndarray


def _ranges(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                    np.ndarray]:
    """The arrays' ids cut into maximal ranges of consecutive ids within one array: (first
    id, length, array and position in it) of each range."""
    lens = np.fromiter((len(x) for x in arrays), dtype=np.int64, count=len(arrays))
    flat = np.concatenate(arrays) if len(arrays) else np.zeros(0, dtype=np.int64)
    firsts = np.cumsum(lens) - lens
    starts = np.flatnonzero(_breaks(flat, firsts))
    owner = np.searchsorted(firsts, starts, side="right") - 1
    return flat[starts], np.diff(np.r_[starts, len(flat)]), owner, starts - firsts[owner]


def _breaks(flat: np.ndarray, firsts: np.ndarray) -> np.ndarray:
    """Where a new range starts: at each array's first id and after each gap."""
    brk = np.ones(len(flat), dtype=bool)
    if len(flat) > 1:
        np.not_equal(flat[1:], flat[:-1] + 1, out=brk[1:])
    brk[firsts[firsts < len(flat)]] = True
    return brk


def _expand(first: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``first[i] + j`` for every i and j < count[i], with the i of each."""
    which = np.repeat(np.arange(len(first)), count)
    offset = np.arange(len(which)) - np.repeat(np.cumsum(count) - count, count)
    return first[which] + offset, which


def _mapped_cuts(cuts: np.ndarray, src: np.ndarray, dst: np.ndarray,
                 length: np.ndarray) -> np.ndarray:
    """The cuts strictly inside each range ``src[i]:src[i]+length[i]``, carried to the same
    offset of ``dst[i]``."""
    lo = np.searchsorted(cuts, src, side="right")
    inside = np.searchsorted(cuts, src + length, side="left") - lo
    idx, which = _expand(lo, inside)
    return dst[which] + (cuts[idx] - src[which])


def _segments_of(cuts: np.ndarray, start: np.ndarray, length: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The segments covering each range (its ends are cuts), with the range of each."""
    first = np.searchsorted(cuts, start)
    return _expand(first, np.searchsorted(cuts, start + length) - first)


def _refine(cuts: np.ndarray, a: np.ndarray, b: np.ndarray, length: np.ndarray,
            most: int, rounds: int) -> np.ndarray | None:
    """Add cuts until every joined pair of ranges is cut at the same offsets; None when
    that takes more than ``rounds`` rounds or ``most`` cuts."""
    for _ in range(rounds):
        carried = np.concatenate([_mapped_cuts(cuts, a, b, length),
                                  _mapped_cuts(cuts, b, a, length)])
        if not len(carried):
            return cuts
        merged = np.union1d(cuts, carried)
        if len(merged) == len(cuts):
            return cuts
        if len(merged) > most:
            return None
        cuts = merged
    return None


def segment(space: ElementSpace, slots: Sequence[np.ndarray],
            joined: tuple[np.ndarray, np.ndarray] | None = None,
            always: bool = False) -> Segments | None:
    """Resolve ``space``'s joins on segments, and cut the ``slots``' id arrays into them.

    Args:
        space: the elements, joins and pins.
        slots: the id arrays of the layer slots.
        joined: ``space.joined()``, when the caller has it already.
        always: segment however short the segments get (tests); by default give up as
            soon as they would be little longer than single elements.

    Returns:
        The segments, or None when segments do not pay (resolve the elements then).
    """
    size = space.size
    left, right = space.joined() if joined is None else joined
    firsts = np.cumsum([0, *(len(x) for x in space._left)])[:-1]
    # a joined range must be consecutive on both sides: cut where either side breaks
    piece = np.flatnonzero(_breaks(left, firsts) | _breaks(right, firsts))
    if not always and len(piece) * _MIN_ELEMENTS_PER_JOIN_RANGE > max(size, 1):
        return None
    length = np.diff(np.r_[piece, len(left)])
    a, b = left[piece], right[piece]
    s0, slot_lens, slot_owner, slot_pos = _ranges(slots)
    p0, pin_lens, pin_owner, _ = _ranges([ids for ids, _ in space.pins])
    cuts = np.unique(np.concatenate([[0, size], a, a + length, b, b + length,
                                     s0, s0 + slot_lens, p0, p0 + pin_lens]))
    # cuts only grow, and never beyond size + 1: unbounded rounds end too
    most = size + 1 if always else max(size, 1) // _MIN_ELEMENTS_PER_RANGE + 1
    rounds = size + 1 if always else _MAX_ROUNDS
    refined = _refine(cuts, a, b, length, most, rounds) if len(cuts) <= most else None
    if refined is None:
        return None
    cuts = refined
    seg_start, seg_len = cuts[:-1], np.diff(cuts)
    seg_a, which = _segments_of(cuts, a, length)
    seg_b = np.searchsorted(cuts, b)[which] + (seg_a - np.searchsorted(cuts, a)[which])
    # a component's smallest element is at the same offset of its first segment
    first_start = seg_start[connected_labels(len(seg_len), seg_a, seg_b)]
    labels = np.repeat(first_start - seg_start, seg_len) + np.arange(size, dtype=np.int64)
    seg, run = _segments_of(cuts, s0, slot_lens)
    pinned_segs, pin_range = _segments_of(cuts, p0, pin_lens)
    return Segments(labels, first_start[seg], slot_owner[run],
                    slot_pos[run] + (seg_start[seg] - s0[run]), seg_len[seg],
                    first_start[pinned_segs],
                    np.bincount(pin_owner[pin_range], minlength=len(space.pins)))
