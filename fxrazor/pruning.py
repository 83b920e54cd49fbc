"""Prune to a target in one call: rank every channel by a criterion, keep the best.

``prune(sn, {"flops": 0.5})`` scores every unit's channels (:func:`fxrazor.importance`),
and keeps, in every unit, the channels above one global threshold (``scope="global"``:
scores normalised per unit, so units compare) or the same fraction of every unit
(``scope="local"``), choosing the threshold or fraction by bisection so that the subnet's
resources (``fxrazor.estimate``) are as large as they may be under the target. Per unit
the kept fraction stays within ``[min_ratio, max_ratio]``, kept counts are multiples of
``round_to`` where the unit is that wide, and a router keeps at least its top-k experts.
``steps > 1`` reaches the target in steps, scoring again after each (with ``calibrate``
between, e.g. a few training batches).

The units must rank their channels by a given importance (``unit="l1"`` at convert):
first-k units would keep the first channels whatever the scores.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> sn = fxrazor.convert(model, torch.randn(1, 4), unit="l1")
    >>> prune(sn, 0.5)
    {'0': 4}
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import torch

from fxrazor.errors import InvalidArgumentError
from fxrazor.estimate import estimate
from fxrazor.importance import importance as score_units
from fxrazor.supernet import Supernet

__all__ = ["prune"]

Estimator = Callable[[dict[str, Any]], Mapping[str, float]]
_BISECTIONS = 40


def _count(n: int, wanted: float, low: float, high: float, round_to: int, least: int) -> int:
    """Kept channels of a unit of ``n``: ``wanted`` clamped to the ratio bounds, rounded
    down to a multiple of ``round_to`` (where the unit is that wide), at least ``least``."""
    count = min(max(wanted, math.ceil(low * n)), math.floor(high * n))
    if round_to > 1 and n >= round_to:
        count = max(round_to, int(count // round_to) * round_to)
    return int(min(n, max(least, count, 1)))


def _choice(unit: Any, count: int) -> int | float:
    return count if getattr(unit, "is_num_mode", True) else count / unit.num_channels


def prune(sn: Supernet, target: Mapping[str, float] | float, *,
          importance: Any = "l1", scope: str = "global", min_ratio: float = 0.0,
          max_ratio: float = 1.0, round_to: int = 1, steps: int = 1,
          calibrate: Callable[[Supernet], Any] | None = None,
          forward_loop: Callable[[Any], Any] | None = None, loader: Iterable[Any] | None = None,
          loss_fn: Callable[..., Any] | None = None,
          estimator: Estimator | None = None) -> dict[str, Any]:
    """Set ``sn``'s unit choices to meet ``target`` and return them.

    Args:
        target: ``{"flops": f}`` or ``{"params": f}``: at most ``f`` times the full model's;
            a float: keep that fraction of every unit (no estimate needed).
        importance: a criterion of :func:`fxrazor.importance.importance`.
        scope: ``"global"`` (one threshold over all units) or ``"local"`` (one fraction).
        min_ratio, max_ratio: bounds on each unit's kept fraction.
        round_to: kept counts are multiples of it (hardware-friendly widths).
        steps: reach the target in this many steps, scoring again after each.
        calibrate: run before each scoring (e.g. a backward for ``taylor``).
        forward_loop, loader, loss_fn: the calibration data of a data criterion
            (``activation``, ``wanda``, ``taylor``), as :func:`fxrazor.importance` takes
            them; used again at every step (a loader must be iterable more than once).
        estimator: ``choices -> resources`` (default ``fxrazor.estimate(sn, choices)``).

    Raises:
        InvalidArgumentError: a bad option, units that cannot rank by importance, or a
            target below the smallest subnet the bounds allow (the choices are unchanged).
    """
    if scope not in ("global", "local"):
        raise InvalidArgumentError(f"scope must be 'global' or 'local', got {scope!r}")
    if not 0 <= min_ratio <= max_ratio <= 1:
        raise InvalidArgumentError("need 0 <= min_ratio <= max_ratio <= 1")
    if not isinstance(round_to, int) or round_to < 1 or not isinstance(steps, int) or steps < 1:
        raise InvalidArgumentError("round_to and steps are positive ints")
    units = [u for u in sn.channel_mutator.mutable_units]
    plain = [u.name for u in units if not callable(getattr(u, "set_importance", None))]
    if plain:
        raise InvalidArgumentError(
            f"units {plain[:3]} keep their first channels whatever the scores; convert with "
            f"unit='l1' (it ranks channels by a given importance) to prune by a criterion")
    if isinstance(target, (int, float)) and not isinstance(target, bool):
        if not 0 < target <= 1:
            raise InvalidArgumentError(f"a ratio target is in (0, 1], got {target!r}")
        key, fraction = None, float(target)
    elif isinstance(target, Mapping) and len(target) == 1 and \
            next(iter(target)) in ("flops", "params"):
        key, fraction = next(iter(target.items()))
        if not 0 < fraction <= 1:
            raise InvalidArgumentError(f"a {key} target is a fraction in (0, 1], got {fraction}")
    else:
        raise InvalidArgumentError(f"target is a ratio or {{'flops' | 'params': fraction}}, "
                                   f"got {target!r}")
    if estimator is None:
        estimator = functools.partial(estimate, sn)

    before = sn.choices()
    try:
        full = None if key is None else float(estimator(sn.sample_choices("max"))[key])
        chosen: dict[str, Any] = {}
        for step in range(1, steps + 1):
            goal = fraction ** (step / steps)  # equal shrink factors per step
            if calibrate is not None:
                calibrate(sn)
            data: dict[str, Any] = {
                k: v for k, v in (("forward_loop", forward_loop), ("loader", loader),
                                  ("loss_fn", loss_fn)) if v is not None}
            scores = score_units(sn, importance, normalize="mean" if scope == "global" else None,
                                 **data)
            for u in units:
                cast(Any, u).set_importance(scores[u.name])  # an l1 unit (checked)
            chosen = _solve(units, scores, key, goal, full, scope, (min_ratio, max_ratio),
                            round_to, estimator)
            sn.set_choices(chosen)
    except Exception:
        sn.set_choices(before)
        raise
    return chosen


def _solve(units: list[Any], scores: dict[str, torch.Tensor], key: str | None, goal: float,
           full: float | None, scope: str, bounds: tuple[float, float], round_to: int,
           estimator: Estimator) -> dict[str, Any]:
    def choices(level: float) -> dict[str, Any]:
        """Kept channels at a level: a threshold on the scores (global) or a fraction."""
        out = {}
        for u in units:
            n = u.num_channels
            wanted = int((scores[u.name] > level).sum()) if scope == "global" \
                else round(level * n)
            out[u.name] = _choice(u, _count(n, wanted, *bounds, round_to, u.min_kept))
        return out

    if key is None:  # a plain ratio: every unit keeps that fraction
        return {u.name: _choice(u, _count(u.num_channels, round(goal * u.num_channels),
                                          *bounds, round_to, u.min_kept)) for u in units}
    assert full is not None  # (set with key)
    limit = goal * full

    def fits(level: float) -> bool:
        return float(estimator(choices(level))[key]) <= limit

    # global: a higher threshold keeps fewer; local: a lower fraction keeps fewer
    every = torch.cat([s.flatten() for s in scores.values()]) if scores else torch.zeros(1)
    lo, hi = (float(every.min()) - 1.0, float(every.max())) if scope == "global" else (1.0, 0.0)
    if not fits(hi):
        raise InvalidArgumentError(
            f"the target {key} <= {goal:.3g} of the full model is below the smallest subnet "
            f"the bounds allow ({float(estimator(choices(hi))[key]) / full:.3g})")
    for _ in range(_BISECTIONS):  # lo keeps the most, hi fits: close in on the edge
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return choices(hi)
