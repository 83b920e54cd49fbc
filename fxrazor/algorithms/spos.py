"""Single Path One-Shot (Guo et al., "Single Path One-Shot Neural Architecture Search with
Uniform Sampling", ECCV 2020).

Every training step draws one subnet uniformly at random (a choice per key of
:meth:`fxrazor.Supernet.choices`: channel units, op mutables, value mutables) and trains
it alone: one forward, one backward. Weights outside the drawn path get no gradient (op
candidates not chosen) or a zero one (channels beyond the drawn width). After training,
:meth:`SPOS.search` runs the evolution search over the trained supernet and sets the
best subnet found; :meth:`~fxrazor.algorithms.BaseAlgorithm.export` freezes it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> algo = SPOS(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)),
    ...             torch.randn(2, 4), seed=1)
    >>> opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.1)
    >>> sorted(algo.train_step((torch.randn(6, 4), torch.tensor([0, 1, 2] * 2)), opt))
    ['loss']
    >>> list(algo.last_subnets)
    ['loss']
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch

from fxrazor.algorithms.base import BaseAlgorithm
from fxrazor.algorithms.subnet_steps import kept_choices
from fxrazor.search import evolution_search
from fxrazor.structures.subnet.candidates import Candidates

__all__ = ["SPOS"]

logger = logging.getLogger(__name__)


class SPOS(BaseAlgorithm):
    """Single-path one-shot training: one uniformly drawn subnet per step.

    Args:
        model: a model (converted with ``example_inputs`` and ``convert_options``; the
            default unit is ``"sequential"``: a width drawn uniformly from 1 to the
            unit's channels; ``unit="one_shot"`` with ``unit_args={"candidate_choices":
            [...]}`` draws from a ladder instead) or a :class:`~fxrazor.Supernet`.
        example_inputs: the inputs to trace ``model`` with.
        seed: the subnet of step ``t`` is a function of ``(seed, t)`` only.
        criterion: ``criterion(outputs, targets) -> loss`` (cross-entropy by default).

    Attributes:
        last_subnets: ``{"loss": choices}``, the subnet the last step trained.

    The supernet's choices are left as they were after each step (what the user or a
    search set), so that :meth:`export` freezes the chosen subnet, not the last drawn.
    """

    def __init__(self, model: torch.nn.Module, example_inputs: Any = None, *, seed: int = 0,
                 criterion: Callable[[Any, Any], torch.Tensor] | None = None,
                 **convert_options: Any) -> None:
        super().__init__(model, example_inputs, seed=seed, criterion=criterion,
                         **convert_options)
        self.last_subnets: dict[str, dict[str, Any]] = {}

    def sample_subnet(self) -> dict[str, Any]:
        """The subnet this step trains: every key drawn uniformly (seeded by step)."""
        return self.sample("spos")

    def _step(self, inputs: Any, targets: Any) -> Mapping[str, Any]:
        subnet = self.sample_subnet()
        with kept_choices(self.supernet):
            self.supernet.set_choices(subnet)
            loss = self.criterion(self(inputs), targets)
            loss.backward()
        self.last_subnets = {"loss": subnet}
        return {"loss": loss.detach()}

    def search(self, score_fn: Callable[[dict[str, Any]], float],
               constraints: Mapping[str, Any] | None = None,
               **evolution_options: Any) -> Candidates:
        """Evolution search (:func:`fxrazor.search.evolution_search`) over the trained
        supernet; the best subnet found becomes the supernet's choice.

        Args:
            score_fn: ``choices -> float``, higher is better (e.g. validation accuracy of
                the supernet at those choices, after ``fxrazor.search.calibrate_bn``).
            constraints: ``{"flops" | "params" | "latency": max or (min, max)}``.
            **evolution_options: passed on (``population_size``, ``max_generations``,
                ...); ``seed`` defaults to the algorithm's.

        Returns:
            The candidates found, best first.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> algo = SPOS(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
            ...             torch.randn(2, 4))
            >>> found = algo.search(lambda c: -abs(c["0"] - 5), population_size=6,
            ...                     max_generations=2, num_mutation=3, num_crossover=3)
            >>> algo.supernet.choices() == found.subnets[0]
            True
        """
        evolution_options.setdefault("seed", self.seed)
        found = evolution_search(self.supernet, score_fn, constraints, **evolution_options)
        self.supernet.set_choices(found.subnets[0])
        logger.info("SPOS search: best score %.6g at %s", found.scores[0], found.subnets[0])
        return found
