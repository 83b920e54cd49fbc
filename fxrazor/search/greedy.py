"""AutoSlim's greedy search: shrink, one step at a time, the unit whose shrinking costs the
least score, until the subnet meets the constraints.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> sn = fxrazor.convert(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
    ...                      torch.randn(2, 4))
    >>> found = greedy_search(sn, lambda c: float(c["0"]), {"params": 30},
    ...                       estimator=lambda c: {"params": 8 * c["0"]}, step=0.25)
    >>> found.subnets[0]
    {'0': 2}
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fxrazor.errors import InvalidArgumentError
from fxrazor.estimate import estimate
from fxrazor.search.common import (
    Constraints,
    Estimator,
    ScoreFn,
    SearchError,
    is_writer,
    progress_bar,
    score_all,
    seeded,
)
from fxrazor.structures.subnet import Candidates

__all__ = ["greedy_search"]

logger = logging.getLogger(__name__)


def _smaller(unit: Any, choice: Any, step: float) -> Any | None:
    """The unit's next smaller choice that keeps fewer channels (and at least its
    minimum), or None: the next candidate of a one-shot unit, else ``step`` of its
    channels fewer (a count or a ratio, by its choice mode)."""
    now = unit.activated_channels_for(choice)
    ladder = getattr(unit, "candidate_choices", None)
    if ladder:
        options = sorted((c for c in ladder if unit.activated_channels_for(c) < now),
                         reverse=True)
    else:
        fewer = max(1, round(step * unit.num_channels))
        count = now - fewer
        number = getattr(unit, "is_num_mode", True)
        options = [count if number else count / unit.num_channels] if count >= 1 else []
    for option in options:
        if unit.activated_channels_for(option) >= unit.min_kept:
            return option
    return None


def greedy_search(sn: Any, score_fn: ScoreFn, constraints: Mapping[str, Any], *,
                  step: float = 0.05, estimator: Estimator | None = None,
                  seed: int | None = 0, checkpoint: str | Path | None = None,
                  resume: bool = False, progress: bool = False) -> Candidates:
    """Start at full width; while the constraints fail, try every unit one step narrower
    (``step``: a fraction of its channels, or its next candidate width), score each, and
    keep the best. Returns the subnet that meets the constraints, with its score and
    resources; the supernet's choices are left as they were.

    Args:
        checkpoint: a JSON file written after every step (the subnet reached, its score);
            with ``resume`` the search goes on from it (same result as one uninterrupted
            run: each step depends only on the subnet before it).
        progress: a tqdm bar over the steps (when tqdm is installed).

    Raises:
        InvalidArgumentError: no constraints, or a bad key or step. SearchError: no unit can
            shrink further and the constraints still fail, or ``score_fn`` failed.
    """
    if not constraints:
        raise InvalidArgumentError("greedy_search needs constraints: it shrinks until they hold")
    if not 0 < step <= 1:
        raise InvalidArgumentError(f"step is a fraction of a unit's channels in (0, 1], "
                                   f"got {step!r}")
    if estimator is None:
        estimator = functools.partial(estimate, sn)

    check = Constraints(constraints, estimator)
    units = {u.name: u for u in sn.channel_mutator.mutable_units}
    before = sn.choices()
    path = Path(checkpoint) if checkpoint is not None else None
    try:
        with seeded(seed):
            current, score, steps = sn.sample_choices("max"), None, 0
            if resume and path is not None and path.exists():
                state = json.loads(path.read_text())
                current, score, steps = state["choices"], state["score"], state["steps"]
            bar = progress_bar(progress, "greedy", initial=steps)
            while not check.feasible(current):
                trials = []
                for name in (k for k in current if k in units):
                    option = _smaller(units[name], current[name], step)
                    if option is not None:
                        trials.append({**current, name: option})
                if not trials:
                    raise SearchError(f"every unit is at its smallest width and the "
                                      f"constraints {dict(constraints)} still fail: "
                                      f"{check.resources(current)}")
                scores = score_all(score_fn, trials)
                best = max(range(len(trials)), key=lambda i: scores[i])
                current, score, steps = trials[best], scores[best], steps + 1
                logger.info("greedy step %d: score %.6g, %s", steps, score,
                            check.resources(current))
                if path is not None and is_writer():
                    path.write_text(json.dumps({"choices": current, "score": score,
                                                "steps": steps}))
                bar.update(1)
            bar.close()
            if score is None:  # full width already meets the constraints
                score = score_all(score_fn, [current])[0]
    finally:
        sn.set_choices(before)
    result = Candidates([current])
    result.set_score(0, score)
    for name, value in check.resources(current).items():
        result.set_resources(0, value, name)
    return result
