"""DSNAS: direct neural architecture sampling (Hu et al., CVPR 2020).

Each step every one-hot op (:class:`~fxrazor.mutables.diff_mutable.OneHotMutableOP`)
draws one candidate ``Z ~ softmax(alpha)`` and runs it alone, scaled by its one-hot
weight (a leaf tensor, ``op.arch_weights``: the straight-through path); the weights and the
architecture parameters learn together from that one forward and backward pass. The
gradient of the loss ``L`` with respect to ``alpha`` is DSNAS's estimate ``dL/dZ_chosen .
d log p(Z) / d alpha``, where ``dL/dZ_chosen = op.arch_weights.grad.sum()`` is the
chosen candidate's credit (as MMRazor's ``DSNAS.handle_grads``).

The resource loss pushes the sampling towards cheaper candidates: ``resource_weight .
sum_ops log p(Z_op) . F_op(Z_op) / F_max``, where ``F_op(c)`` is the FLOPs candidate ``c``
adds over the op's cheapest candidate and ``F_max`` the FLOPs of the most expensive
choice of every op (its gradient is the score-function estimate of ``d E[F] / d alpha``,
scaled). As MMRazor's DSNAS, it applies only while the sampled subnet's FLOPs are at
least ``flops_constraint`` (always, when that is None); FLOPs are torch's
``FlopCounterMode`` count of each frozen candidate subnet on the supernet's example inputs.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fxrazor.mutables import OneHotMutableOP
    >>> class Cell(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = nn.Linear(4, 6)
    ...         self.op = OneHotMutableOP({"fc": nn.Linear(6, 6), "id": nn.Identity()})
    ...         self.op.set_forward_args(torch.zeros(2))  # for the trace
    ...         self.head = nn.Linear(6, 3)
    ...     def forward(self, x):
    ...         return self.head(self.op(self.fc(x)))
    >>> algo = DSNAS(Cell(), torch.randn(2, 4), resource_weight=0.1)
    >>> opt = torch.optim.SGD(algo.parameters(), lr=0.1)  # weights and alphas together
    >>> batch = (torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
    >>> sorted(algo.train_step(batch, opt))
    ['arch_loss', 'loss', 'resource_loss']
    >>> list(algo.last_subnets[0]), type(algo.export().get_submodule("op")).__name__ in (
    ...     "Linear", "Identity")
    (['op'], True)
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fxrazor.algorithms.base import BaseAlgorithm, Criterion
from fxrazor.algorithms.darts import argmax_choices
from fxrazor.algorithms.diff_common import (
    backward_into,
    check_apart,
    optimizer_params,
    torch_seeded,
)
from fxrazor.api import freeze
from fxrazor.errors import InvalidArgumentError
from fxrazor.mutables.diff_mutable import OneHotMutableOP

__all__ = ["DSNAS"]

logger = logging.getLogger(__name__)


class DSNAS(BaseAlgorithm):
    """DSNAS's search (see the module doc).

    Args:
        model, example_inputs, seed, criterion, **convert_options: as for
            :class:`~fxrazor.algorithms.base.BaseAlgorithm`; the model holds at least one
            ``OneHotMutableOP``.
        resource_weight: the weight of the resource loss (0 turns it off).
        flops_constraint: the resource loss applies while the sampled subnet has at
            least these FLOPs (None: always).
        pretrain_steps: steps that train the weights only (the candidates still sampled
            from ``softmax(alpha)``), before the architecture learns too.

    Attributes:
        op_flops: ``{group key: {candidate: FLOPs over the cheapest candidate}}``.
        min_flops, max_flops: the supernet's FLOPs with every one-hot op at its cheapest /
            most expensive candidate.
        last_subnets: ``[choices]``, the candidates the last step drew.
    """

    def __init__(self, model: nn.Module, example_inputs: Any = None, *,
                 resource_weight: float = 0.0, flops_constraint: float | None = None,
                 pretrain_steps: int = 0, seed: int = 0, criterion: Criterion | None = None,
                 **convert_options: Any) -> None:
        super().__init__(model, example_inputs, seed=seed, criterion=criterion,
                         **convert_options)
        if isinstance(resource_weight, bool) or not isinstance(resource_weight, int | float) \
                or not math.isfinite(resource_weight) or resource_weight < 0:
            raise InvalidArgumentError(
                f"resource_weight must be a finite number >= 0, got {resource_weight!r}")
        if flops_constraint is not None and (isinstance(flops_constraint, bool)
                                             or not isinstance(flops_constraint, int | float)):
            raise InvalidArgumentError(
                f"flops_constraint must be a number or None, got {flops_constraint!r}")
        if isinstance(pretrain_steps, bool) or not isinstance(pretrain_steps, int) \
                or pretrain_steps < 0:
            raise InvalidArgumentError(
                f"pretrain_steps must be an int >= 0, got {pretrain_steps!r}")
        groups = self._onehot_groups()
        if not groups:
            raise InvalidArgumentError(
                "DSNAS samples one-hot op mutables (OneHotMutableOP), and the model has none")
        self.resource_weight = float(resource_weight)
        self.flops_constraint = None if flops_constraint is None else float(flops_constraint)
        self.pretrain_steps = pretrain_steps
        self.op_flops, self.min_flops, self.max_flops = self._flops_table(groups)
        self.last_subnets: list[dict[str, Any]] = []

    # ---- the search space ---------------------------------------------------------------
    def _onehot_groups(self) -> dict[str, list[OneHotMutableOP]]:
        """``{group key: its one-hot ops}`` (an alias group shares one arch param)."""
        return {g.key: [m for m in g.mutables if isinstance(m, OneHotMutableOP)]
                for g in self.supernet.nas_mutator.groups
                if g.is_diff and any(isinstance(m, OneHotMutableOP) for m in g.mutables)}

    def _frozen_flops(self, choices: dict[str, Any]) -> float:
        """FLOPs (FlopCounterMode) of the frozen subnet ``choices`` selects, on the example
        inputs (``fxrazor.estimate`` counts channel widths only, not op choices)."""
        self.supernet.set_choices(choices)
        frozen = freeze(self.supernet).eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            frozen(*self.supernet.example_args)
        return float(counter.get_total_flops())

    def _flops_table(self, groups: dict[str, list[OneHotMutableOP]]
                     ) -> tuple[dict[str, dict[str, float]], float, float]:
        """Each candidate's FLOPs over its op's cheapest one, at the current widths and
        the other ops' current choices; the total with every op cheapest / dearest. A
        candidate's cost does not depend on the other ops' choices (widths are fixed),
        so a sampled subnet's FLOPs are ``min_flops`` plus its candidates' extras."""
        base = self.supernet.choices()
        table: dict[str, dict[str, float]] = {}
        try:
            for key, ops in groups.items():
                table[key] = {c: self._frozen_flops({**base, key: c}) for c in ops[0].choices}
            lowest = {key: min(row.values()) for key, row in table.items()}
            extras = {key: {c: f - lowest[key] for c, f in row.items()}
                      for key, row in table.items()}
            cheapest = {key: min(row, key=row.__getitem__) for key, row in extras.items()}
            min_flops = self._frozen_flops({**base, **cheapest})
        finally:
            self.supernet.set_choices(base)
        max_flops = min_flops + sum(max(row.values()) for row in extras.values())
        return extras, min_flops, max_flops

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture parameters of the one-hot ops."""
        nas = self.supernet.nas_mutator
        return [nas.arch_param(key) for key in self._onehot_groups()]

    def subnet_flops(self, choices: dict[str, Any]) -> float:
        """The FLOPs of the subnet with the one-hot ops at ``choices`` (by the table)."""
        return self.min_flops + sum(self.op_flops[k][c] for k, c in choices.items()
                                    if k in self.op_flops)

    # ---- the step -----------------------------------------------------------------------
    def train_step(self, batch: Any, optimizer: torch.optim.Optimizer, *,
                   arch_optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]:
        """One DSNAS step: sample, forward, backward; the weights (``optimizer``) and the
        architecture (``arch_optimizer``, or ``optimizer`` when it holds the arch params
        too) step together. Everything is checked first."""
        inputs, targets = self.check_batch(batch)
        self.check_optimizer(optimizer)
        arch = self.arch_parameters()
        optimizers = [optimizer]
        if arch_optimizer is not None:
            self.check_optimizer(arch_optimizer, arch, role="architecture")
            check_apart(arch_optimizer, list(self.supernet.model_params()), "architecture",
                        "weights")
            check_apart(optimizer, arch, "weights", "architecture parameters")
            optimizers.append(arch_optimizer)
        elif not {id(p) for p in optimizer_params(optimizer)} & {id(p) for p in arch}:
            raise InvalidArgumentError(
                "DSNAS trains the architecture with the weights: give the optimizer "
                "algo.parameters(), or pass arch_optimizer= over algo.arch_parameters()")
        self.train()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        losses = self._step(inputs, targets)
        self.sync_gradients(p for opt in optimizers for p in optimizer_params(opt))
        for opt in optimizers:
            opt.step()
        self.step_count += 1
        return {k: float(v) for k, v in losses.items()}

    def _step(self, inputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        groups = self._onehot_groups()
        with torch_seeded(self, "dsnas"):  # the ops draw with torch.multinomial
            loss = self.criterion(self(inputs), targets)
        ops = [op for members in groups.values() for op in members]
        backward_into(loss, [*self.supernet.model_params(), *(op.arch_weights for op in ops)])
        drawn = {key: _drawn(members[0]) for key, members in groups.items()}
        self.last_subnets = [drawn]
        losses = {"loss": loss.detach()}
        if self.step_count >= self.pretrain_steps:
            losses.update(self._arch_grads(groups, drawn))
        for op in ops:  # a fresh one-hot leaf comes with every forward
            op.arch_weights.grad = None
        return losses

    def _arch_grads(self, groups: dict[str, list[OneHotMutableOP]],
                    drawn: dict[str, str]) -> dict[str, torch.Tensor]:
        """Accumulate DSNAS's architecture gradient and the resource loss's into the arch
        params; returns ``arch_loss`` (``sum log p(Z)``) and ``resource_loss``."""
        nas = self.supernet.nas_mutator
        surrogate, log_p = [], []
        for key, members in groups.items():
            probs = torch.softmax(nas.arch_param(key), dim=-1)
            for op in members:
                weights = op.arch_weights.detach()
                grad = op.arch_weights.grad
                credit = grad.sum() if grad is not None else weights.new_zeros(())
                lp = torch.log((weights * probs).sum())
                surrogate.append(credit.detach() * lp)
                log_p.append((key, _drawn(op), lp))
        resource = self.resource_loss(log_p, drawn)
        backward_into(sum(surrogate, resource), self.arch_parameters())
        return {"arch_loss": torch.stack([lp for _, _, lp in log_p]).sum().detach(),
                "resource_loss": resource.detach()}

    def resource_loss(self, log_p: list[tuple[str, str, torch.Tensor]],
                      drawn: dict[str, str]) -> torch.Tensor:
        """``resource_weight . sum log p(Z_op) . F_op(Z_op) / max_flops`` over the drawn
        ``(group key, candidate, log p)``; zero while the drawn subnet is below
        ``flops_constraint`` or the weight is 0."""
        zero = log_p[0][2].new_zeros(()) if log_p else torch.zeros(())
        if not self.resource_weight or self.max_flops <= 0:
            return zero
        if self.flops_constraint is not None and \
                self.subnet_flops(drawn) < self.flops_constraint:
            return zero
        terms = [lp * (self.op_flops[key][c] / self.max_flops) for key, c, lp in log_p]
        return self.resource_weight * sum(terms, zero)

    def export(self) -> torch.fx.GraphModule:
        """Each one-hot op at its most probable candidate, frozen (the supernet's op
        choices are set to them)."""
        self.supernet.set_choices(argmax_choices(self))
        return freeze(self.supernet)


def _drawn(op: OneHotMutableOP) -> str:
    """The candidate the op's last forward ran."""
    return op._all_choices[int(op.arch_weights.detach().argmax())]
