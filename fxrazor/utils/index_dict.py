"""An ordered dict keyed by disjoint ``[start, end)`` index ranges.

Example:
    >>> d = IndexDict()
    >>> d[(4, 8)] = "b"
    >>> d[(0, 4)] = "a"
    >>> list(d.items())
    [((0, 4), 'a'), ((4, 8), 'b')]
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, TypeVar

from fxrazor.errors import IndexOverlapError, InvalidArgumentError

__all__ = ["IndexDict"]

VT = TypeVar("VT")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_index(key: Any) -> tuple[int, int]:
    """Return ``key`` as a ``(start, end)`` tuple, or raise if it is not a valid range."""
    if not isinstance(key, tuple) or len(key) != 2 or not all(_is_int(v) for v in key):
        raise InvalidArgumentError(
            f"IndexDict keys must be (start, end) tuples of two ints, got {key!r}."
        )
    start, end = key
    if start >= end:
        raise InvalidArgumentError(
            f"IndexDict key {key!r} is empty or reversed; a range [start, end) needs start < end."
        )
    return start, end


class IndexDict(OrderedDict[tuple[int, int], VT]):
    """An ``OrderedDict`` whose keys are non-overlapping ``[start, end)`` ranges.

    Keys are checked on every insertion (through ``d[k] = v``, ``update``, ``setdefault``
    or the constructor): each must be a tuple of two ints with ``start < end`` that does
    not overlap any other key. Iteration always follows ascending ``start``.

    Raises:
        InvalidArgumentError: for a key that is not a valid range.
        IndexOverlapError: for a key overlapping an existing one; both ranges are named.

    Example:
        >>> d = IndexDict({(0, 2): "x"})
        >>> d[(1, 3)] = "y"
        Traceback (most recent call last):
        ...
        fxrazor.errors.IndexOverlapError: IndexDict: range (1, 3) overlaps existing range (0, 2); ranges are [start, end) and must be disjoint.
    """

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is a key, or a range overlapping one (as MMRazor's IndexDict).

        Example:
            >>> d = IndexDict({(0, 4): "a"})
            >>> (0, 4) in d, (2, 6) in d, (4, 6) in d
            (True, True, False)
        """
        if super().__contains__(key):
            return True
        start, end = _check_index(key)
        return any(start < e and s < end for s, e in self.keys())

    def setdefault(self, key: tuple[int, int], default: VT = None) -> VT:  # type: ignore[assignment]
        # OrderedDict.setdefault asks `key in self`, which here also means "overlaps".
        if super().__contains__(key):
            return self[key]
        self[key] = default
        return default

    def __setitem__(self, key: tuple[int, int], value: VT) -> None:
        start, end = _check_index(key)
        if not super().__contains__(key):
            for other_start, other_end in self.keys():
                if start < other_end and other_start < end:
                    raise IndexOverlapError(
                        f"IndexDict: range {key!r} overlaps existing range "
                        f"{(other_start, other_end)!r}; ranges are [start, end) and must be "
                        "disjoint."
                    )
        super().__setitem__((start, end), value)
        self._sort()

    def _sort(self) -> None:
        # Re-append keys in ascending order; move_to_end does not call __setitem__.
        for index in sorted(self.keys()):
            self.move_to_end(index)
