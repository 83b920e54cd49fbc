"""Evolution search over a supernet's choices (MMRazor's ``EvolutionSearchLoop``).

A first population of ``population_size`` random feasible subnets is scored; each
generation keeps the ``top_k`` best seen so far and breeds the next population from them:
``num_mutation`` children each take a parent's choices and resample every key with
probability ``mutate_prob``, ``num_crossover`` children take each key from one of two
parents (the second with probability ``crossover_prob``). Children must meet the
constraints and be new (up to ``max_trials`` draws each). After ``max_generations`` the
best ``top_k`` are returned as :class:`~fxrazor.structures.subnet.Candidates`, best first.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> sn = fxrazor.convert(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
    ...                      torch.randn(2, 4))
    >>> best = evolution_search(sn, lambda c: -abs(c["0"] - 5), population_size=6,
    ...                         max_generations=3, num_mutation=3, num_crossover=3, top_k=3)
    >>> best.subnets[0], best.scores[0]
    ({'0': 5}, 0.0)
"""

from __future__ import annotations

import functools
import json
import logging
import random
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

__all__ = ["evolution_search"]

logger = logging.getLogger(__name__)


def _key(choices: Mapping[str, Any]) -> str:
    return json.dumps(choices, sort_keys=True, default=str)


class _Evolution:
    def __init__(self, sn: Any, score_fn: ScoreFn, constraints: Constraints,
                 options: dict[str, Any]) -> None:
        self.sn, self.score_fn, self.constraints = sn, score_fn, constraints
        self.o = options
        self.seen: dict[str, tuple[dict[str, Any], float, dict[str, float]]] = {}
        self.top: list[str] = []

    def draw(self, make: Any, taken: set[str]) -> dict[str, Any] | None:
        """A new feasible subnet from ``make`` (not scored yet, not ``taken``), or None
        after ``max_trials`` draws."""
        for _ in range(self.o["max_trials"]):
            choices = make()
            key = _key(choices)
            if key not in self.seen and key not in taken and self.constraints.feasible(choices):
                taken.add(key)
                return choices
        return None

    def mutate(self) -> dict[str, Any]:
        parent = self.seen[random.choice(self.top)][0]
        fresh = self.sn.sample_choices()
        return {k: fresh[k] if random.random() < self.o["mutate_prob"] else v
                for k, v in parent.items()}

    def crossover(self) -> dict[str, Any]:
        a = self.seen[random.choice(self.top)][0]
        b = self.seen[random.choice(self.top)][0]
        return {k: b[k] if random.random() < self.o["crossover_prob"] else v
                for k, v in a.items()}

    def evaluate(self, population: list[dict[str, Any]]) -> None:
        unique = list({_key(c): c for c in population}.values())
        scores = score_all(self.score_fn, unique)
        for choices, score in zip(unique, scores, strict=True):
            self.seen[_key(choices)] = (choices, score, self.constraints.resources(choices))
        ranked = sorted(self.seen, key=lambda k: -self.seen[k][1])
        self.top = ranked[: self.o["top_k"]]

    def breed(self) -> list[dict[str, Any]]:
        children: list[dict[str, Any]] = []
        taken: set[str] = set()
        for make, count in ((self.mutate, self.o["num_mutation"]),
                            (self.crossover, self.o["num_crossover"])):
            for _ in range(count):
                child = self.draw(make, taken)
                if child is not None:
                    children.append(child)
        return children

    def state(self, generation: int, population: list[dict[str, Any]]) -> dict[str, Any]:
        return {"generation": generation, "population": population,
                "seen": list(self.seen.values()), "random": random.getstate()}

    def load(self, state: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
        self.seen = {_key(c): (c, s, r) for c, s, r in state["seen"]}
        self.top = sorted(self.seen, key=lambda k: -self.seen[k][1])[: self.o["top_k"]]
        version, internal, gauss = state["random"]
        random.setstate((version, tuple(internal), gauss))
        return int(state["generation"]), list(state["population"])


def evolution_search(sn: Any, score_fn: ScoreFn, constraints: Mapping[str, Any] | None = None,
                     *, population_size: int = 50, max_generations: int = 20,
                     num_mutation: int = 25, num_crossover: int = 25,
                     mutate_prob: float = 0.1, crossover_prob: float = 0.5, top_k: int = 10,
                     seed: int | None = 0, estimator: Estimator | None = None,
                     max_trials: int = 100, checkpoint: str | Path | None = None,
                     resume: bool = False, progress: bool = False) -> Candidates:
    """Search ``sn``'s choices for the highest ``score_fn`` under ``constraints``.

    Args:
        sn: a :class:`fxrazor.Supernet`; its choices are left as they were.
        score_fn: ``choices -> float``, higher is better (it may set the choices and run
            the supernet: they are put back afterwards).
        constraints: ``{"flops" | "params" | "latency": max or (min, max)}``.
        estimator: ``choices -> {resource: value}`` for the constraints; by default
            ``fxrazor.estimate(sn, choices)``.
        checkpoint: a JSON file written after every generation; with ``resume`` the search
            goes on from it (same result as one uninterrupted run).
        progress: a tqdm bar over the generations (when tqdm is installed).

    Raises:
        InvalidArgumentError: a bad option or constraint key. SearchError: ``score_fn``
            failed or gave no number, or no random subnet meets the constraints.
    """
    for name, value in (("population_size", population_size), ("top_k", top_k),
                        ("max_trials", max_trials)):
        if not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{name} must be a positive int, got {value!r}")
    if not 0 <= mutate_prob <= 1 or not 0 <= crossover_prob <= 1:
        raise InvalidArgumentError("mutate_prob and crossover_prob are probabilities in [0, 1]")
    if estimator is None and constraints:
        estimator = functools.partial(estimate, sn)

    search = _Evolution(sn, score_fn, Constraints(constraints, estimator), {
        "top_k": top_k, "num_mutation": num_mutation, "num_crossover": num_crossover,
        "mutate_prob": mutate_prob, "crossover_prob": crossover_prob,
        "max_trials": max_trials})
    path = Path(checkpoint) if checkpoint is not None else None
    before = sn.choices()
    try:
        with seeded(seed):
            start, population = 0, list[dict[str, Any]]()
            if resume and path is not None and path.exists():
                start, population = search.load(json.loads(path.read_text()))
            else:
                taken: set[str] = set()
                for _ in range(population_size):
                    found = search.draw(sn.sample_choices, taken)
                    if found is None:
                        break
                    population.append(found)
                if not population:
                    raise SearchError(f"no random subnet meets the constraints {constraints} "
                                      f"in {max_trials} draws; loosen them")
            bar = progress_bar(progress, "evolution", max_generations, start)
            for generation in range(start, max_generations):
                search.evaluate(population)
                population = search.breed()
                if path is not None and is_writer():
                    path.write_text(json.dumps(search.state(generation + 1, population)))
                best = search.seen[search.top[0]]
                logger.info("generation %d: best score %.6g", generation, best[1])
                bar.update(1)
            bar.close()
    finally:
        sn.set_choices(before)
    result = Candidates()
    for i, key in enumerate(search.top):
        choices, score, resources = search.seen[key]
        result.append(choices)
        result.set_score(i, score)
        for name, amount in resources.items():
            result.set_resources(i, amount, name)
    return result

