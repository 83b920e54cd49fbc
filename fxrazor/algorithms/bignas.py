"""BigNAS (Yu et al., "BigNAS: Scaling Up Neural Architecture Search with Big Single-Stage
Models", ECCV 2020): sandwich training over the whole search space.

As :class:`~fxrazor.algorithms.AutoSlim`, each step trains the largest subnet on the
targets, then the smallest and ``num_random_samples`` random ones by in-place
distillation from the largest's logits, all on one batch, with one optimizer step; but
a subnet here is a choice of *every* key of :meth:`fxrazor.Supernet.choices`: channel
units, op mutables (largest/smallest: the candidate with the most/fewest parameters)
and value mutables (kernel sizes, expand ratios bound with
:mod:`fxrazor.value_binding`). Build such a space by converting the model, binding the
values, and passing the supernet here.

Left out from MMRazor's BigNAS: the drop-path and dropout schedule of the largest
subnet (it needs the backbone's block types), and BigNAS's initialisation and
learning-rate recipe (the caller's to choose).

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> from fxrazor.mutables.mutable_value import OneShotMutableValue
    >>> from fxrazor.value_binding import bind_value
    >>> sn = fxrazor.convert(nn.Sequential(nn.Conv2d(3, 4, 5, padding=2), nn.ReLU(),
    ...                                    nn.Flatten(), nn.Linear(64, 2)),
    ...                      torch.randn(1, 3, 4, 4))
    >>> bind_value(sn, "0", "kernel_size", OneShotMutableValue([3, 5]))
    '0.kernel_size'
    >>> algo = BigNAS(sn, num_random_samples=1)
    >>> opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.1)
    >>> sorted(algo.train_step((torch.randn(2, 3, 4, 4), torch.tensor([0, 1])), opt))
    ['max', 'min', 'random0']
    >>> algo.last_subnets["min"]
    {'0': 1, '0.kernel_size': 3}
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fxrazor.algorithms.autoslim import SandwichAlgorithm
from fxrazor.search import evolution_search
from fxrazor.structures.subnet.candidates import Candidates

__all__ = ["BigNAS"]

logger = logging.getLogger(__name__)


class BigNAS(SandwichAlgorithm):
    """Sandwich training with in-place distillation over every searched key.

    Args: see :class:`~fxrazor.algorithms.autoslim.SandwichAlgorithm`
    (``model``, ``example_inputs``, ``num_random_samples=2``,
    ``distill_temperature=1.0``, ``seed=0``, ``criterion=None``, convert options). A
    model is converted with ``unit="sequential"`` unless ``unit`` is given (every width
    from 1 to a unit's channels); the value search space is usually built on the
    supernet first and passed as it is.

    :meth:`search` runs the evolution search, as MMRazor does for BigNAS (the paper's
    coarse-to-fine search is left out).
    """

    default_unit = "sequential"

    def sample_space(self, mode: str) -> dict[str, Any]:
        return self.supernet.sample_choices(mode)

    def search(self, score_fn: Callable[[dict[str, Any]], float],
               constraints: Mapping[str, Any] | None = None,
               **evolution_options: Any) -> Candidates:
        """Evolution search (:func:`fxrazor.search.evolution_search`, ``seed`` by default
        the algorithm's) over every key; the best subnet becomes the supernet's choice.
        Score subnets after ``fxrazor.search.calibrate_bn``: the BatchNorm statistics
        gathered in training mix every subnet's."""
        evolution_options.setdefault("seed", self.seed)
        found = evolution_search(self.supernet, score_fn, constraints, **evolution_options)
        self.supernet.set_choices(found.subnets[0])
        logger.info("BigNAS search: best score %.6g at %s", found.scores[0], found.subnets[0])
        return found
