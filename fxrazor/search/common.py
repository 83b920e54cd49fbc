"""What the searches share: constraints on resources, scoring with clear errors, a seeded
random state, and scoring sharded over the ranks of a ``torch.distributed`` group.

Example:
    >>> check = Constraints({"flops": 100, "params": (10, 50)}, lambda c: {"flops": 80, "params": 20})
    >>> check.feasible({"a": 1})
    True
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch.distributed as dist

from fxrazor.errors import FxRazorError, InvalidArgumentError

__all__ = ["SearchError", "Constraints", "Estimator", "ScoreFn", "score_all", "seeded",
           "RESOURCE_KEYS", "progress_bar", "is_writer"]

#: The resources a constraint may bound (those ``fxrazor.estimate`` and Candidates know).
RESOURCE_KEYS = ("flops", "params", "latency")

Estimator = Callable[[dict[str, Any]], Mapping[str, float]]
ScoreFn = Callable[[dict[str, Any]], float]


class SearchError(FxRazorError, RuntimeError):
    """A search cannot go on: its score function failed or returned no number, or no
    candidate meets the constraints. The supernet keeps the choices it had."""


def _bounds(key: str, limit: Any) -> tuple[float, float]:
    if isinstance(limit, (int, float)) and not isinstance(limit, bool):
        return -math.inf, float(limit)
    if isinstance(limit, (tuple, list)) and len(limit) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in limit):
        return float(limit[0]), float(limit[1])
    raise InvalidArgumentError(f"constraint {key!r}: give a maximum or a (min, max) pair, "
                               f"got {limit!r}")


class Constraints:
    """Bounds on resources (``{"flops": max}`` or ``{"flops": (min, max)}``), checked with
    an estimator (``choices -> {resource: value}``; by default :func:`fxrazor.estimate`).

    Unknown resource names are refused when made, so a typo never passes every candidate.
    """

    def __init__(self, limits: Mapping[str, Any] | None, estimator: Estimator | None) -> None:
        limits = dict(limits or {})
        unknown = [k for k in limits if k not in RESOURCE_KEYS]
        if unknown:
            raise InvalidArgumentError(f"unknown constraint keys {unknown}; a constraint "
                                       f"bounds one of {list(RESOURCE_KEYS)}")
        self.bounds = {k: _bounds(k, v) for k, v in limits.items()}
        self.estimator = estimator
        if self.bounds and estimator is None:
            raise InvalidArgumentError("constraints need an estimator (choices -> resources)")

    def resources(self, choices: dict[str, Any]) -> dict[str, float]:
        """The estimated resources of ``choices`` ({} without constraints)."""
        if self.estimator is None:
            return {}
        found = dict(self.estimator(choices))
        missing = [k for k in self.bounds if k not in found]
        if missing:
            raise InvalidArgumentError(f"the estimator gives no {missing} (it gives "
                                       f"{sorted(found)})")
        return {k: float(v) for k, v in found.items()}

    def meets(self, resources: Mapping[str, float]) -> bool:
        return all(lo <= resources[k] <= hi for k, (lo, hi) in self.bounds.items())

    def feasible(self, choices: dict[str, Any]) -> bool:
        """Whether ``choices`` meets every bound."""
        return not self.bounds or self.meets(self.resources(choices))


def _score(score_fn: ScoreFn, choices: dict[str, Any]) -> float:
    try:
        value = score_fn(choices)
    except Exception as e:  # the user's function: say which candidate made it fail
        raise SearchError(f"score_fn failed on {choices}: {type(e).__name__}: {e}") from e
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise SearchError(f"score_fn returned {value!r} for {choices}; it must return a "
                          f"number (higher is better), not NaN")
    return float(value)


def score_all(score_fn: ScoreFn, population: Sequence[dict[str, Any]]) -> list[float]:
    """Scores of ``population``, in order. Under an initialised ``torch.distributed``
    group, rank r scores candidates r, r + world, ... and the scores are gathered, so
    every rank gets the list one process would compute."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [_score(score_fn, c) for c in population]
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = {i: _score(score_fn, population[i]) for i in range(rank, len(population), world)}
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, mine)
    merged: dict[int, float] = {}
    for part in gathered:
        merged.update(part)
    return [merged[i] for i in range(len(population))]


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Python's ``random`` seeded for the block (the units sample with it), then put back:
    a search with a seed gives the same result every time and on every rank."""
    if seed is None:
        yield
        return
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def progress_bar(enabled: bool, desc: str, total: int | None = None, initial: int = 0) -> Any:
    """A tqdm bar (``update(n)``, ``close()``) when ``enabled`` and tqdm is installed (the
    ``progress`` extra), else one that does nothing."""
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(desc=desc, total=total, initial=initial)
    return _Quiet()


class _Quiet:
    """The bar without tqdm or when not asked for."""

    def update(self, n: int = 1) -> None:
        """Nothing to show."""

    def close(self) -> None:
        """Nothing to close."""


def is_writer() -> bool:
    """Whether this process writes checkpoints: the only one, or rank 0 of a group (every
    rank holds the same state, so one file is enough and ranks never race on it)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
