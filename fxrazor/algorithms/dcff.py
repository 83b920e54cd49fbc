"""DCFF: training a compact network by dynamic-coded filter fusion (Lin et al., 2021).

The supernet is converted with DCFF units (``unit="dcff"``): each prunable conv becomes a
:class:`~fxrazor.ops.fuse_conv.FuseConv2d`, whose kept filters are fusions of all its
filters, weighted by a softmax of their distances at a temperature ``tau``. Training
lowers ``tau`` along DCFF's schedule (:func:`~fxrazor.mutables.dcff_unit.dcff_temperature`),
so the fusions sharpen into single filters; at every schedule step the units rank their
filters again (:func:`~fxrazor.mutables.dcff_unit.calc_information`) and keep the most
important ones. The widths are fixed before training (the units' one choice: pass
``target_ratio`` or ``unit_args={"candidate_choices": [...]}``); :meth:`DCFF.export`
freezes the fused filters into plain convs of those widths.

Schedule: the units are updated at every ``step_freq``-th step (0, ``step_freq``, ...),
at progress ``u = step // step_freq`` of ``U = total_steps // step_freq`` updates (after
``U``, at ``U``): with ``step_freq`` the steps of an epoch it is the paper's per-epoch
schedule; with 1, MMRazor's per-iteration one.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
    ...                       nn.Conv2d(8, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> algo = DCFF(model, torch.randn(2, 3, 6, 6), total_steps=4, target_ratio=0.5)
    >>> opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.1)
    >>> batch = (torch.randn(4, 3, 6, 6), torch.tensor([0, 1, 2, 0]))
    >>> for _ in range(2):
    ...     _ = algo.train_step(batch, opt)
    >>> round(algo.temperature, 4), algo.export().get_submodule("0").out_channels
    (0.0002, 4)
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from fxrazor.algorithms.base import BaseAlgorithm, Criterion
from fxrazor.errors import InvalidArgumentError
from fxrazor.mutables.dcff_unit import DCFFChannelUnit, calc_information, dcff_temperature

__all__ = ["DCFF"]

logger = logging.getLogger(__name__)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"DCFF: {name} must be an int >= 1, got {value!r}")
    return value


class DCFF(BaseAlgorithm):
    """DCFF's training (see the module doc).

    Args:
        model, example_inputs, seed, criterion, **convert_options: as for
            :class:`~fxrazor.algorithms.base.BaseAlgorithm` (``unit="dcff"`` by default).
        total_steps: the training's length in steps: the schedule's end.
        step_freq: update the fusion every ``step_freq`` steps.
        target_ratio: every unit's kept width ratio (sets ``unit_args``'s
            ``candidate_choices``; leave it out to give those yourself).

    Attributes:
        temperature: the temperature of the last update (None before the first).
        last_subnets: ``[choices]`` of the last step (DCFF samples nothing: one width).
    """

    default_unit = "dcff"

    def __init__(self, model: nn.Module, example_inputs: Any = None, *, total_steps: int,
                 step_freq: int = 1, target_ratio: float | None = None, seed: int = 0,
                 criterion: Criterion | None = None, **convert_options: Any) -> None:
        total_steps = _positive_int("total_steps", total_steps)
        step_freq = _positive_int("step_freq", step_freq)
        if target_ratio is not None:
            convert_options["unit_args"] = self._with_ratio(
                convert_options.get("unit_args"), target_ratio)
        super().__init__(model, example_inputs, seed=seed, criterion=criterion,
                         **convert_options)
        if not any(isinstance(u, DCFFChannelUnit) for u in self.supernet.every_unit()):
            raise InvalidArgumentError(
                "DCFF trains DCFF units: convert with unit='dcff' (the default here)")
        self.total_steps, self.step_freq = total_steps, step_freq
        self.temperature: float | None = None
        self.last_subnets: list[dict[str, Any]] = []

    @staticmethod
    def _with_ratio(unit_args: Any, ratio: Any) -> dict[str, Any]:
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) \
                or not 0 < ratio <= 1:
            raise InvalidArgumentError(f"DCFF: target_ratio must lie in (0, 1], got {ratio!r}")
        args = dict(unit_args or {})
        given = args.get("candidate_choices")
        if given is not None and list(given) != [ratio]:
            raise InvalidArgumentError(
                f"DCFF: target_ratio={ratio!r} and unit_args candidate_choices={given!r} "
                f"disagree; give one of them")
        return {**args, "candidate_choices": [float(ratio)], "choice_mode": "ratio"}

    def schedule(self, step: int) -> float | None:
        """The temperature DCFF updates the units with at ``step`` (None: no update)."""
        if step % self.step_freq:
            return None
        updates = max(1, self.total_steps // self.step_freq)
        return dcff_temperature(min(step // self.step_freq, updates), updates)

    def _step(self, inputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        tau = self.schedule(self.step_count)
        if tau is not None:
            self.temperature = calc_information(self.supernet, tau=tau)
            logger.debug("DCFF step %d: fusion at temperature %g", self.step_count, tau)
        loss = self.criterion(self(inputs), targets)
        loss.backward()
        self.last_subnets = [self.supernet.choices()]
        return {"loss": loss.detach()}
