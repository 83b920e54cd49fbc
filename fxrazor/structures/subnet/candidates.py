"""A list of sampled subnets together with their score and resource use.

Example:
    >>> c = Candidates([{"op": "conv3x3"}, {"op": "conv5x5"}])
    >>> c.set_score(1, 2.0)
    >>> c.sort_by("score")
    >>> c.subnets
    [{'op': 'conv5x5'}, {'op': 'conv3x3'}]
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from typing import Any, SupportsIndex

from fxrazor.errors import IndexOutOfRangeError, InvalidArgumentError

__all__ = ["Candidates"]

#: Resource names a candidate records, besides its score.
RESOURCE_KEYS: tuple[str, ...] = ("flops", "params", "latency")
_ALL_KEYS: tuple[str, ...] = ("score", *RESOURCE_KEYS)


def _parse_subnet_str(text: str) -> dict | None:
    """Return the dict that ``text`` spells, or None if it does not spell a dict."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _is_stored_form(item: dict) -> bool:
    """Whether ``item`` is ``{str(subnet): {resource: value}}`` rather than a plain subnet."""
    if len(item) != 1:
        return False
    ((key, value),) = item.items()
    return (
        isinstance(key, str)
        and isinstance(value, dict)
        and all(name in _ALL_KEYS for name in value)
        and _parse_subnet_str(key) is not None
    )


def _to_stored(item: Any) -> dict[str, dict[str, float]]:
    """Convert a plain subnet or a stored-form dict into the stored form."""
    if not isinstance(item, dict):
        raise InvalidArgumentError(
            f"Candidates: a candidate must be a subnet dict, got {type(item).__name__} ({item!r})."
        )
    resources = dict.fromkeys(_ALL_KEYS, 0.0)
    if _is_stored_form(item):
        ((key, given),) = item.items()
        resources.update({name: float(v) for name, v in given.items()})
        return {key: resources}
    key = str(item)
    if _parse_subnet_str(key) != item:
        raise InvalidArgumentError(
            f"Candidates: subnet {item!r} does not survive str()/ast.literal_eval; use only "
            "plain Python values (str, int, float, bool, None, list, tuple, dict)."
        )
    return {key: resources}


def _to_stored_list(item: Any) -> list[dict[str, dict[str, float]]]:
    """Accept one candidate or a list of them; return them in stored form."""
    if isinstance(item, dict):
        return [_to_stored(item)]
    if isinstance(item, Iterable) and not isinstance(item, str | bytes):
        return [_to_stored(sub) for sub in item]
    raise InvalidArgumentError(
        f"Candidates: expected a subnet dict or a list of them, got {type(item).__name__}."
    )


def _check_key(key_indicator: str, allowed: tuple[str, ...]) -> None:
    if key_indicator not in allowed:
        raise InvalidArgumentError(
            f"Candidates: unknown key_indicator {key_indicator!r}; use one of {list(allowed)}."
        )


class Candidates(list):
    """Sampled subnets, each stored as ``{str(subnet): {'score', 'flops', 'params', 'latency'}}``.

    ``append``, ``extend``, ``insert`` and the constructor accept a plain subnet dict (it
    gets zero score and resources), a dict already in the stored form, or a list of
    either. A stored-form dict is recognised as a single-key dict whose key is a string
    spelling a dict and whose value is a dict of ``score``/resource values.

    Args:
        initdata: candidates to start with.

    Example:
        >>> candidates = Candidates()
        >>> subnet_1 = {'1': 'choice1', '2': 'choice2'}
        >>> candidates.append(subnet_1)
        >>> candidates  # doctest: +NORMALIZE_WHITESPACE
        [{"{'1': 'choice1', '2': 'choice2'}":
          {'score': 0.0, 'flops': 0.0, 'params': 0.0, 'latency': 0.0}}]
        >>> candidates.set_resource(0, 49.9, 'flops')
        >>> candidates.set_score(0, 100.)
        >>> candidates  # doctest: +NORMALIZE_WHITESPACE
        [{"{'1': 'choice1', '2': 'choice2'}":
          {'score': 100.0, 'flops': 49.9, 'params': 0.0, 'latency': 0.0}}]
        >>> subnet_2 = {'choice_3': 'layer_3', 'choice_4': 'layer_4'}
        >>> candidates.append(subnet_2)
        >>> candidates.subnets  # doctest: +NORMALIZE_WHITESPACE
        [{'1': 'choice1', '2': 'choice2'}, {'choice_3': 'layer_3', 'choice_4': 'layer_4'}]
        >>> candidates.resources('flops')
        [49.9, 0.0]
        >>> candidates.scores
        [100.0, 0.0]
    """

    def __init__(self, initdata: Any = None) -> None:
        super().__init__()
        if initdata is not None:
            self.extend(initdata)

    def append(self, item: Any) -> None:
        """Append one candidate, or each candidate of a list, in any accepted form."""
        super().extend(_to_stored_list(item))

    def extend(self, other: Any) -> None:
        """Append every candidate of ``other`` (a list, or a single subnet dict)."""
        super().extend(_to_stored_list(other))

    def insert(self, i: SupportsIndex, item: Any) -> None:
        """Insert a candidate, or a list of them in order, before position ``i``."""
        position = int(i)
        for offset, stored in enumerate(_to_stored_list(item)):
            super().insert(position + offset if position >= 0 else position, stored)

    def _record(self, i: int) -> dict[str, float]:
        """Return the resource dict of candidate ``i``, checking the index."""
        if not isinstance(i, int) or isinstance(i, bool) or not -len(self) <= i < len(self):
            raise IndexOutOfRangeError(
                f"Candidates: index {i!r} is out of range for {len(self)} candidates."
            )
        return next(iter(self[i].values()))

    def set_resource(self, i: int, resources: float, key_indicator: str = "flops") -> None:
        """Set resource ``key_indicator`` (flops, params or latency) of candidate ``i``."""
        _check_key(key_indicator, RESOURCE_KEYS)
        self._record(i)[key_indicator] = float(resources)

    def set_resources(self, i: int, resources: float, key_indicator: str = "flops") -> None:
        """Alias of :meth:`set_resource`."""
        self.set_resource(i, resources, key_indicator)

    def set_score(self, i: int, score: float) -> None:
        """Set the score of candidate ``i``."""
        self._record(i)["score"] = float(score)

    def update_resources(self, resources: list[dict[str, float]], start: int = 0) -> None:
        """Apply ``resources[k]`` (a dict of resource values) to candidate ``start + k``.

        Raises:
            IndexOutOfRangeError: if the updates run past the last candidate.
            InvalidArgumentError: if an update names an unknown resource.
        """
        if not isinstance(start, int) or start < 0 or start + len(resources) > len(self):
            raise IndexOutOfRangeError(
                f"Candidates.update_resources: index out of range; {len(resources)} updates "
                f"starting at index {start!r} do not fit {len(self)} candidates."
            )
        for update in resources:  # validate everything first so a bad item changes nothing
            if not isinstance(update, dict):
                raise InvalidArgumentError(
                    "Candidates.update_resources: each item must be a dict of resource values, "
                    f"got {type(update).__name__}."
                )
            for name in update:
                _check_key(name, RESOURCE_KEYS)
        for offset, update in enumerate(resources):
            record = self._record(start + offset)
            record.update({name: float(value) for name, value in update.items()})

    def sort_by(self, key_indicator: str = "score", reverse: bool = True) -> None:
        """Sort in place by ``key_indicator`` (score or a resource); descending by default."""
        _check_key(key_indicator, _ALL_KEYS)
        super().sort(key=lambda item: next(iter(item.values()))[key_indicator], reverse=reverse)

    @property
    def subnets(self) -> list[dict]:
        """The subnets, parsed back into dicts."""
        return [ast.literal_eval(next(iter(item))) for item in self]

    @property
    def scores(self) -> list[float]:
        """The score of every candidate."""
        return [next(iter(item.values()))["score"] for item in self]

    def resources(self, key_indicator: str = "flops") -> list[float]:
        """The value of resource ``key_indicator`` for every candidate."""
        _check_key(key_indicator, RESOURCE_KEYS)
        return [next(iter(item.values()))[key_indicator] for item in self]
