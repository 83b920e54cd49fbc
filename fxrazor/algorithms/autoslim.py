"""AutoSlim (Yu & Huang, "AutoSlim: Towards One-Shot Architecture Search for Channel
Numbers", 2019): a slimmable supernet trained by the sandwich rule, then searched
greedily for the channel numbers that meet a budget.

Each step trains, on the same batch, the largest subnet (loss on the targets), the
smallest, and ``num_random_samples`` random ones; those take no targets but learn the
largest subnet's detached logits (in-place distillation, :func:`fxrazor.distill.kd_loss`).
Every backward pass adds to the same gradients, and the optimizer steps once. Only the
channel units are sampled (op and value mutables keep their choices); BigNAS samples
every key (:mod:`fxrazor.algorithms.bignas`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> algo = AutoSlim(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)),
    ...                 torch.randn(2, 4), num_random_samples=1)
    >>> opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.1)
    >>> sorted(algo.train_step((torch.randn(6, 4), torch.tensor([0, 1, 2] * 2)), opt))
    ['max', 'min', 'random0']
    >>> algo.last_subnets["min"]
    {'0': 0.05}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from fxrazor.algorithms.base import BaseAlgorithm
from fxrazor.algorithms.subnet_steps import kept_choices, logits_of
from fxrazor.distill import kd_loss
from fxrazor.errors import InvalidArgumentError
from fxrazor.search import greedy_search
from fxrazor.structures.subnet.candidates import Candidates
from fxrazor.supernet import Supernet

__all__ = ["AutoSlim", "SandwichAlgorithm", "AUTOSLIM_RATIOS"]

logger = logging.getLogger(__name__)

#: AutoSlim's default width ladder: 5 %, 10 %, ..., 100 % of each unit's channels.
AUTOSLIM_RATIOS: tuple[float, ...] = tuple(i / 20 for i in range(1, 21))


class SandwichAlgorithm(BaseAlgorithm):
    """The sandwich rule with in-place distillation (shared by AutoSlim and BigNAS); a
    subclass says which keys are sampled (:meth:`sample_space`) and how it converts.

    Args:
        model: a model (converted with ``example_inputs`` and ``convert_options``) or a
            :class:`~fxrazor.Supernet`.
        example_inputs: the inputs to trace ``model`` with.
        num_random_samples: random subnets per step, besides the largest and smallest.
        distill_temperature: the temperature of :func:`~fxrazor.distill.kd_loss`.
        seed: the subnets of step ``t`` are a function of ``(seed, t)`` only.
        criterion: the largest subnet's ``criterion(outputs, targets) -> loss``
            (cross-entropy by default).

    Attributes:
        last_subnets: the subnets the last step trained, keyed as its losses
            (``max``, ``min``, ``random0``, ...).
    """

    #: ``unit_args`` given to ``convert`` when the caller names no unit.
    default_unit_args: Mapping[str, Any] = {}

    def __init__(self, model: torch.nn.Module, example_inputs: Any = None, *,
                 num_random_samples: int = 2, distill_temperature: float = 1.0,
                 seed: int = 0, criterion: Callable[[Any, Any], torch.Tensor] | None = None,
                 **convert_options: Any) -> None:
        if not isinstance(num_random_samples, int) or isinstance(num_random_samples, bool) \
                or num_random_samples < 0:
            raise InvalidArgumentError(
                f"num_random_samples must be an int >= 0, got {num_random_samples!r}")
        if not isinstance(distill_temperature, (int, float)) \
                or not math.isfinite(distill_temperature) or distill_temperature <= 0:
            raise InvalidArgumentError(
                f"distill_temperature must be a finite number > 0, got {distill_temperature!r}")
        if not isinstance(model, Supernet) and "unit" not in convert_options:
            # the default unit comes with its ladder; the caller's unit_args go on top
            convert_options["unit_args"] = {**self.default_unit_args,
                                            **(convert_options.get("unit_args") or {})}
        super().__init__(model, example_inputs, seed=seed, criterion=criterion,
                         **convert_options)
        self.num_random_samples = num_random_samples
        self.distill_temperature = float(distill_temperature)
        self.last_subnets: dict[str, dict[str, Any]] = {}

    @property
    def sample_kinds(self) -> list[str]:
        """The subnets of one step, in order: the largest first (it teaches the others)."""
        return ["max", "min", *(f"random{i}" for i in range(self.num_random_samples))]

    def sample_space(self, mode: str) -> dict[str, Any]:
        """Choices over the sampled keys by ``mode`` (random, max, min); not applied."""
        raise NotImplementedError

    def sample_subnet(self, kind: str) -> dict[str, Any]:
        """The subnet ``kind`` (one of :attr:`sample_kinds`) of this step; each kind has
        its own seeded stream, so adding random samples leaves the others as they were."""
        mode = "random" if kind.startswith("random") else kind
        with self.seeded(kind):
            return self.sample_space(mode)

    def _step(self, inputs: Any, targets: Any) -> Mapping[str, Any]:
        losses: dict[str, torch.Tensor] = {}
        subnets: dict[str, dict[str, Any]] = {}
        teacher: torch.Tensor | None = None
        with kept_choices(self.supernet):
            for kind in self.sample_kinds:
                subnets[kind] = self.sample_subnet(kind)
                self.supernet.set_choices(subnets[kind])
                outputs = self(inputs)
                if teacher is None:  # the largest subnet learns the targets ...
                    loss = self.criterion(outputs, targets)
                    teacher = logits_of(outputs).detach()
                else:  # ... and the others learn from it
                    loss = kd_loss(logits_of(outputs), teacher, self.distill_temperature)
                # backward now: only one subnet's activations are held at a time
                loss.backward()
                losses[kind] = loss.detach()
        self.last_subnets = subnets
        return losses


class AutoSlim(SandwichAlgorithm):
    """AutoSlim: sandwich training of the channel widths, then greedy slimming.

    Converts with ``unit="one_shot"`` and the width ladder :data:`AUTOSLIM_RATIOS`
    (ratios 0.05 to 1.0, as MMRazor's ``OneShotMutableChannelUnit`` for AutoSlim) unless
    ``unit`` is given; ``unit_args`` given without a unit override the ladder's entries
    (e.g. ``{"divisor": 8}``). See :class:`SandwichAlgorithm` for the arguments.
    Like MMRazor's, the smaller subnets learn from the largest only (no target loss);
    MMRazor's option to keep BatchNorm in eval mode is left out.
    """

    default_unit = "one_shot"
    default_unit_args = {"candidate_choices": list(AUTOSLIM_RATIOS), "choice_mode": "ratio"}

    def sample_space(self, mode: str) -> dict[str, Any]:
        return self.supernet.channel_mutator.sample_choices(mode)

    def search(self, score_fn: Callable[[dict[str, Any]], float],
               constraints: Mapping[str, Any], **greedy_options: Any) -> Candidates:
        """AutoSlim's greedy search (:func:`fxrazor.search.greedy_search`): from the
        largest subnet, narrow the unit that costs the least score until ``constraints``
        hold; the subnet found becomes the supernet's choice.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> algo = AutoSlim(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
            ...                 torch.randn(2, 4))
            >>> found = algo.search(lambda c: c["0"], {"params": 30})  # 7 per channel, + 2
            >>> algo.supernet.unit("0").activated_channels, found.resources("params")
            (4, [30.0])
        """
        greedy_options.setdefault("seed", self.seed)
        found = greedy_search(self.supernet, score_fn, constraints, **greedy_options)
        self.supernet.set_choices(found.subnets[0])
        logger.info("AutoSlim search: score %.6g at %s", found.scores[0], found.subnets[0])
        return found
