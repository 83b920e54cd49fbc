"""DMCP: differentiable Markov channel pruning (Guo et al., CVPR 2020).

The supernet is converted with DMCP units (``unit="dmcp"``): each unit keeps its channel
groups along a Markov chain whose transition logits are the unit's ``arch_param``. A step
trains the weights on a sandwich of subnets drawn by the units' modes (``strategy``, by
default MMRazor's: ``max``, ``min``, ``random``, then ``direct``, a draw from the chains,
which is ``random`` until the architecture trains), then, at the architecture's steps, the
arch params with their own optimizer on the task loss of the *expected* forward (full
width, each channel scaled by its keep probability) plus a FLOPs loss on the expected
FLOPs (:func:`~fxrazor.mutables.dmcp_flops.expected_flops`).

The FLOPs loss (MMRazor's ``log_l1``) works on ``e = E[FLOPs] / F`` and ``t = target /
F``, ``F`` the full width's FLOPs: ``log(t - e)`` below ``0.95 t``, zero within ``[0.95 t,
t]``, ``log(e - 0.95 t)`` above ``t``; its gradient pushes ``e`` into that band from both
sides. ``l1`` (``|e - t|``) and ``l2`` (``(e - t)^2``) are there too. The weights'
passes run without the keep-probability scaling (each unit's ``arch_train`` off), so the
weights train the subnets :meth:`DMCP.export` freezes.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 20, 1), nn.BatchNorm2d(20), nn.ReLU(),
    ...                       nn.Conv2d(20, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> algo = DMCP(model, torch.randn(1, 3, 4, 4), target_flops=0.5)
    >>> opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.1)
    >>> arch_opt = torch.optim.Adam(algo.arch_parameters(), lr=0.01)
    >>> batch = (torch.randn(4, 3, 4, 4), torch.tensor([0, 1, 2, 0]))
    >>> sorted(algo.train_step(batch, opt, arch_optimizer=arch_opt))
    ['arch_loss', 'flops_loss', 'loss_direct', 'loss_max', 'loss_min', 'loss_random']
    >>> algo.export().get_submodule("0").out_channels <= 20
    True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from fxrazor.algorithms.base import BaseAlgorithm, Criterion
from fxrazor.algorithms.diff_common import backward_into, check_optimizers
from fxrazor.api import freeze
from fxrazor.errors import InvalidArgumentError
from fxrazor.mutables.dmcp_flops import current_flops, expected_flops, flops_layers
from fxrazor.mutables.dmcp_unit import DMCPChannelUnit

__all__ = ["DMCP", "FLOPS_LOSSES"]

logger = logging.getLogger(__name__)

FLOPS_LOSSES = ("log_l1", "l1", "l2")
_WEIGHT_MODES = ("max", "min", "random", "direct")
_BAND = 0.95  # the log_l1 loss is zero for E[FLOPs] in [0.95 target, target]


class DMCP(BaseAlgorithm):
    """DMCP's training (see the module doc).

    Args:
        model, example_inputs, seed, criterion, **convert_options: as for
            :class:`~fxrazor.algorithms.base.BaseAlgorithm` (``unit="dmcp"`` by default).
        target_flops: the FLOPs to reach: a ratio of the full width's in ``(0, 1]``, or
            absolute (> 1), counted as :func:`~fxrazor.mutables.dmcp_flops.current_flops`
            counts them (multiply-accumulates of one run on the example inputs).
        flops_loss_weight: the FLOPs loss's weight.
        flops_loss_type: ``log_l1`` (default), ``l1`` or ``l2``.
        strategy: the weights' passes per step, each a mode of ``max``, ``min``,
            ``random``, ``direct``.
        arch_start_step: the first step that trains the architecture.
        arch_train_freq: then every ``arch_train_freq`` steps.

    Attributes:
        full_flops, target: the full width's FLOPs and the target, absolute.
        last_subnets: the choices of the last step's weight passes, in order.
    """

    default_unit = "dmcp"

    def __init__(self, model: nn.Module, example_inputs: Any = None, *, target_flops: float,
                 flops_loss_weight: float = 1.0, flops_loss_type: str = "log_l1",
                 strategy: Sequence[str] = _WEIGHT_MODES, arch_start_step: int = 0,
                 arch_train_freq: int = 1, seed: int = 0, criterion: Criterion | None = None,
                 **convert_options: Any) -> None:
        super().__init__(model, example_inputs, seed=seed, criterion=criterion,
                         **convert_options)
        if not self.dmcp_units():
            raise InvalidArgumentError(
                "DMCP trains DMCP units with channel groups: convert with unit='dmcp' (the "
                "default here) a model with a unit wide enough for its pruning_cfg")
        self._check_options(flops_loss_weight, flops_loss_type, strategy, arch_start_step,
                            arch_train_freq)
        self.flops_loss_weight = float(flops_loss_weight)
        self.flops_loss_type = flops_loss_type
        self.strategy = tuple(strategy)
        self.arch_start_step, self.arch_train_freq = arch_start_step, arch_train_freq
        self.full_flops = self._flops_at(lambda u: u.num_channels)
        self.min_flops = self._flops_at(lambda u: u.min_channels)
        self.target = self._absolute_target(target_flops)
        self.last_subnets: list[dict[str, Any]] = []

    # ---- set-up -------------------------------------------------------------------------
    @staticmethod
    def _check_options(weight: Any, kind: Any, strategy: Any, start: Any, freq: Any) -> None:
        if isinstance(weight, bool) or not isinstance(weight, int | float) \
                or not math.isfinite(weight) or weight < 0:
            raise InvalidArgumentError(
                f"flops_loss_weight must be a finite number >= 0, got {weight!r}")
        if kind not in FLOPS_LOSSES:
            raise InvalidArgumentError(
                f"flops_loss_type must be one of {FLOPS_LOSSES}, got {kind!r}")
        if isinstance(strategy, str) or not isinstance(strategy, Sequence) \
                or not all(m in _WEIGHT_MODES for m in strategy):
            raise InvalidArgumentError(
                f"strategy must be a sequence of {_WEIGHT_MODES}, got {strategy!r}")
        for name, value, low in (("arch_start_step", start, 0), ("arch_train_freq", freq, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidArgumentError(f"{name} must be an int >= {low}, got {value!r}")

    def dmcp_units(self) -> list[DMCPChannelUnit]:
        """The mutable DMCP units that have channel groups to learn."""
        return [u for u in self.supernet.every_unit()
                if isinstance(u, DMCPChannelUnit) and u.is_mutable and u.num_groups]

    def arch_parameters(self) -> list[nn.Parameter]:
        """The units' transition logits (give them to ``arch_optimizer``)."""
        return [p for u in self.dmcp_units() for p in u.arch_params()]

    def _flops_at(self, width_of: Any) -> float:
        """The FLOPs with every DMCP unit at ``width_of(unit)``, the others as they are."""
        widths = {u.name: float(u.activated_channels) for u in self.supernet.every_unit()}
        widths.update({u.name: float(width_of(u)) for u in self.dmcp_units()})
        return sum(float(layer.flops(widths.__getitem__))
                   for layer in flops_layers(self.supernet))

    def _absolute_target(self, target: Any) -> float:
        if isinstance(target, bool) or not isinstance(target, int | float) \
                or not math.isfinite(target) or target <= 0:
            raise InvalidArgumentError(
                f"target_flops must be a ratio in (0, 1] or absolute FLOPs > 1, got {target!r}")
        absolute = float(target) * self.full_flops if target <= 1 else float(target)
        if not self.min_flops <= absolute <= self.full_flops:
            raise InvalidArgumentError(
                f"target_flops {target!r} ({absolute:.4g} FLOPs) lies outside what the units "
                f"can reach, [{self.min_flops:.4g}, {self.full_flops:.4g}]")
        return absolute

    # ---- losses -------------------------------------------------------------------------
    def flops_loss(self) -> torch.Tensor:
        """The weighted FLOPs loss of the expected FLOPs (differentiable in the arch
        params; see the module doc)."""
        e = expected_flops(self.supernet) / self.full_flops
        t = self.target / self.full_flops
        if self.flops_loss_type == "l1":
            loss = (e - t).abs()
        elif self.flops_loss_type == "l2":
            loss = (e - t) ** 2
        elif float(e.detach()) < _BAND * t:
            loss = torch.log(t - e)
        elif float(e.detach()) <= t:
            loss = e * 0.0  # in the band: nothing to push (a zero that keeps the graph)
        else:
            loss = torch.log(e - _BAND * t)
        return self.flops_loss_weight * loss

    def is_arch_step(self, step: int) -> bool:
        """Whether the architecture trains at ``step``."""
        return step >= self.arch_start_step and \
            (step - self.arch_start_step) % self.arch_train_freq == 0

    # ---- the step -----------------------------------------------------------------------
    def train_step(self, batch: Any, optimizer: torch.optim.Optimizer, *,
                   arch_optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]:
        """One DMCP step: the weights on the strategy's subnets (``optimizer``), then, at
        the architecture's steps, the arch params (``arch_optimizer``) on the same batch.
        Everything is checked first."""
        inputs, targets = self.check_batch(batch)
        check_optimizers(self, optimizer, arch_optimizer,
                         "DMCP.train_step needs arch_optimizer=, an optimizer of "
                         "algo.arch_parameters() (the units' transition logits)")
        losses = super().train_step((inputs, targets), optimizer)
        if self.is_arch_step(self.step_count - 1):  # (the base counted the step already)
            losses.update(self._arch_step(inputs, targets, cast(torch.optim.Optimizer, arch_optimizer)))  # (checked)
        return losses

    def _sample(self, mode: str, salt: str) -> None:
        with self.seeded(salt):  # the units draw with Python's random
            for unit in self.dmcp_units():
                unit.sample_subnet(mode, arch_train=False)

    def _step(self, inputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        arch_started = self.step_count > self.arch_start_step
        losses: dict[str, torch.Tensor] = {}
        self.last_subnets = []
        for i, mode in enumerate(self.strategy):
            drawn = "random" if mode == "direct" and not arch_started else mode
            self._sample(drawn, f"{mode}:{i}")
            self.last_subnets.append(self.supernet.choices())
            loss = self.criterion(self(inputs), targets)
            backward_into(loss, self.supernet.model_params())
            name = f"loss_{mode}" if f"loss_{mode}" not in losses else f"loss_{mode}_{i}"
            losses[name] = loss.detach()
        return losses

    def _arch_step(self, inputs: Any, targets: Any,
                   arch_optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """The arch params down the expected forward's task loss plus the FLOPs loss. As
        MMRazor's, the forward runs in eval mode, so it leaves the BatchNorms' statistics
        alone."""
        arch = self.arch_parameters()
        arch_optimizer.zero_grad(set_to_none=True)
        for unit in self.dmcp_units():
            unit.sample_subnet("expected")  # full width, scaled by the keep probabilities
        self.eval()
        try:
            arch_loss = self.criterion(self(inputs), targets)
        finally:
            self.train()
            for unit in self.dmcp_units():
                unit.arch_train = False
        flops_loss = self.flops_loss()
        backward_into(arch_loss + flops_loss, arch)
        self.sync_gradients(arch)
        arch_optimizer.step()
        return {"arch_loss": float(arch_loss.detach()), "flops_loss": float(flops_loss.detach())}

    # ---- export -------------------------------------------------------------------------
    def expected_choices(self) -> dict[str, int | float]:
        """Each DMCP unit at its expected width, rounded to its group grid."""
        choices: dict[str, int | float] = {}
        with torch.no_grad():
            for unit in self.dmcp_units():
                groups = round(float(unit.marginal_probs().sum()))
                choices[unit.name] = unit._as_choice(unit.min_channels + groups * unit.group_size)
        return choices

    def export(self, mode: str = "expected") -> torch.fx.GraphModule:
        """The subnet at the units' expected widths (``mode="expected"``, the paper's
        choice) or drawn from their chains (``"direct"``, seeded by the step), frozen;
        the supernet's choices are set to it. Its FLOPs are :meth:`subnet_flops`."""
        if mode == "expected":
            self.supernet.set_choices(self.expected_choices())
        elif mode == "direct":
            self._sample("direct", "export")
        else:
            raise InvalidArgumentError(f"export mode must be 'expected' or 'direct', got {mode!r}")
        for unit in self.dmcp_units():
            unit.arch_train = False
        return freeze(self.supernet)

    def subnet_flops(self) -> float:
        """The FLOPs of the supernet's current choices (as ``target`` counts them)."""
        return current_flops(self.supernet)
