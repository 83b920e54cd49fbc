"""DARTS: differentiable architecture search by bi-level optimisation (Liu et al., ICLR 2019).

The supernet's differentiable op mutables (``DiffMutableOP``, ``DiffChoiceRoute``) mix
their candidates by ``softmax(alpha)``; each step first moves the architecture parameters
``alpha`` down the gradient of the loss on a *validation* batch, then the weights down the
gradient of the loss on the *training* batch, each with its own optimizer.

First order (``unrolled=False``): the architecture gradient is ``d L_val(w, alpha) /
d alpha`` at the current weights. Second order (``unrolled=True``): it is taken at the
weights after one virtual step of the weights' optimizer, ``w' = w - xi grad_w
L_train(w, alpha)``, which adds ``- xi d^2 L_train / (d alpha d w) . grad_w' L_val(w',
alpha)``; that Hessian-vector product is the central finite difference of ``grad_alpha
L_train`` at ``w +- eps grad_w' L_val``, ``eps = 0.01 / ||grad_w' L_val||`` (the paper's,
and MMRazor's ``DartsDDP``). The weights are put back afterwards.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fxrazor.mutables import DiffMutableOP
    >>> class Cell(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = nn.Linear(4, 6)
    ...         self.op = DiffMutableOP({"relu": nn.ReLU(), "tanh": nn.Tanh()})
    ...         self.op.set_forward_args(torch.zeros(2))  # for the trace
    ...         self.head = nn.Linear(6, 3)
    ...     def forward(self, x):
    ...         return self.head(self.op(self.fc(x)))
    >>> algo = DARTS(Cell(), torch.randn(2, 4))
    >>> opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.1)
    >>> arch_opt = torch.optim.Adam(algo.arch_parameters(), lr=3e-4)
    >>> batch = (torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
    >>> sorted(algo.train_step(batch, opt, val_batch=batch, arch_optimizer=arch_opt))
    ['arch_loss', 'loss']
    >>> type(algo.export().get_submodule("op")).__name__ in ("ReLU", "Tanh")
    True
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from fxrazor.algorithms.base import BaseAlgorithm, Criterion
from fxrazor.algorithms.diff_common import backward_into, check_optimizers, optimizer_params
from fxrazor.api import freeze
from fxrazor.errors import InvalidArgumentError

__all__ = ["DARTS", "argmax_choices"]

logger = logging.getLogger(__name__)


def argmax_choices(algo: BaseAlgorithm) -> dict[str, Any]:
    """Each differentiable search group's most probable candidate(s) (a route's top
    ``num_chosen`` edges): what DARTS and DSNAS derive and export."""
    nas = algo.supernet.nas_mutator
    favoured = nas.sample_choices("max")  # for a differentiable group: its arch param's argmax
    return {g.key: favoured[g.key] for g in nas.groups if g.is_diff}


class DARTS(BaseAlgorithm):
    """DARTS's search (see the module doc).

    Args:
        model, example_inputs, seed, criterion, **convert_options: as for
            :class:`~fxrazor.algorithms.base.BaseAlgorithm`; the model holds at least one
            differentiable op mutable.
        unrolled: take the second-order (unrolled) architecture gradient.

    Attributes:
        last_subnets: ``[choices]``, the argmax subnet after the last step (DARTS samples
            nothing: every step trains the mixed supernet).
    """

    def __init__(self, model: nn.Module, example_inputs: Any = None, *, unrolled: bool = False,
                 seed: int = 0, criterion: Criterion | None = None,
                 **convert_options: Any) -> None:
        super().__init__(model, example_inputs, seed=seed, criterion=criterion,
                         **convert_options)
        if not isinstance(unrolled, bool):
            raise InvalidArgumentError(f"unrolled must be a bool, got {unrolled!r}")
        if not self.arch_parameters():
            raise InvalidArgumentError(
                "DARTS searches differentiable op mutables (DiffMutableOP, DiffChoiceRoute), "
                "and the model has none")
        self.unrolled = unrolled
        self.last_subnets: list[dict[str, Any]] = []

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture parameters (give them to ``arch_optimizer``)."""
        return list(self.supernet.arch_params().values())

    def _loss(self, inputs: Any, targets: Any) -> torch.Tensor:
        return self.criterion(self(inputs), targets)

    def _step(self, inputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        loss = self._loss(inputs, targets)
        backward_into(loss, self.supernet.model_params())  # the weights only, never alpha
        return {"loss": loss.detach()}

    def check_step(self, batch: Any, optimizer: torch.optim.Optimizer, val_batch: Any,
                   arch_optimizer: torch.optim.Optimizer | None) -> None:
        """Every check of :meth:`train_step`, before anything changes."""
        self.check_batch(batch)
        if val_batch is None:
            raise InvalidArgumentError(
                "DARTS.train_step needs val_batch=(inputs, targets): the architecture "
                "learns on data the weights do not train on")
        self.check_batch(val_batch)
        check_optimizers(self, optimizer, arch_optimizer,
                         "DARTS.train_step needs arch_optimizer=, an optimizer of "
                         "algo.arch_parameters() (e.g. Adam(lr=3e-4, betas=(0.5, 0.999)))")

    def train_step(self, batch: Any, optimizer: torch.optim.Optimizer, *,
                   val_batch: Any = None,
                   arch_optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]:
        """One DARTS step: the architecture on ``val_batch`` (``arch_optimizer``), then
        the weights on ``batch`` (``optimizer``). Everything is checked first."""
        self.check_step(batch, optimizer, val_batch, arch_optimizer)
        assert arch_optimizer is not None
        inputs, targets = self.check_batch(batch)
        val_inputs, val_targets = self.check_batch(val_batch)
        self.train()
        arch = self.arch_parameters()
        arch_optimizer.zero_grad(set_to_none=True)
        if self.unrolled:
            arch_loss = self.unrolled_arch_grad(inputs, targets, val_inputs, val_targets,
                                                optimizer)
        else:
            arch_loss = self._loss(val_inputs, val_targets)
            backward_into(arch_loss, arch)
        self.sync_gradients(arch)
        arch_optimizer.step()
        losses = super().train_step((inputs, targets), optimizer)
        self.last_subnets = [argmax_choices(self)]
        return {"arch_loss": float(arch_loss.detach()), **losses}

    # ---- the second-order gradient ------------------------------------------------------
    def unrolled_arch_grad(self, inputs: Any, targets: Any, val_inputs: Any, val_targets: Any,
                           optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """Put DARTS's unrolled gradient in the arch params' ``.grad`` (the weights end as
        they began, their ``.grad`` untouched); returns the validation loss at ``w'``."""
        weights = [p for p in optimizer_params(optimizer) if p.requires_grad]
        arch = self.arch_parameters()
        backup = [p.detach().clone() for p in weights]
        saved_grads = [p.grad for p in weights]
        try:
            lrs = self._virtual_step(weights, inputs, targets, optimizer)
            val_loss = self._loss(val_inputs, val_targets)
            grads = _grads(val_loss, [*arch, *weights])
            d_alpha, d_w = grads[:len(arch)], grads[len(arch):]
            _restore(weights, backup)
            # per-parameter step sizes fold into the direction: d w'/d alpha = -xi_p H_p
            direction = [lr * g for lr, g in zip(lrs, d_w, strict=True)]
            hessian = self._hessian_product(direction, weights, backup, inputs, targets)
            for a, d, h in zip(arch, d_alpha, hessian, strict=True):
                a.grad = (d - h).detach()
        finally:
            _restore(weights, backup)
            for p, g in zip(weights, saved_grads, strict=True):
                p.grad = g
        return val_loss.detach()

    def _virtual_step(self, weights: list[nn.Parameter], inputs: Any, targets: Any,
                      optimizer: torch.optim.Optimizer) -> list[float]:
        """``w <- w'``: one SGD step of the weights' optimizer (its lr, momentum buffer,
        dampening, nesterov and weight decay; other optimizers step with their lr and
        weight decay) on the training batch, in place. Returns each weight's lr."""
        grads = _grads(self._loss(inputs, targets), weights)
        group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        lrs = []
        with torch.no_grad():
            for p, grad in zip(weights, grads, strict=True):
                group = group_of[id(p)]
                lr = float(group["lr"])
                step = grad + float(group.get("weight_decay", 0.0)) * p
                momentum = float(group.get("momentum", 0.0))
                buffer = optimizer.state.get(p, {}).get("momentum_buffer")
                if momentum and buffer is not None:
                    dampening = float(group.get("dampening", 0.0))
                    moved = momentum * buffer + (1 - dampening) * step
                    step = step + momentum * moved if group.get("nesterov") else moved
                p.sub_(lr * step)
                lrs.append(lr)
        return lrs

    def _hessian_product(self, direction: list[torch.Tensor], weights: list[nn.Parameter],
                         origin: list[torch.Tensor], inputs: Any,
                         targets: Any) -> list[torch.Tensor]:
        """``d^2 L_train / (d alpha d w) . direction`` at ``origin``, by central finite
        differences with ``eps = 0.01 / ||direction||``."""
        arch = self.arch_parameters()
        norm = torch.cat([d.reshape(-1) for d in direction]).norm() if direction else None
        if norm is None or float(norm) < 1e-12:
            # the validation loss does not move the weights: no second-order term
            logger.debug("DARTS: zero validation gradient, first-order step")
            return [torch.zeros_like(a) for a in arch]
        eps = 0.01 / norm
        sides = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, o, d in zip(weights, origin, direction, strict=True):
                    p.copy_(o + sign * eps * d)
            sides.append(_grads(self._loss(inputs, targets), arch))
        _restore(weights, origin)
        return [(pos - neg) / (2 * eps) for pos, neg in zip(*sides, strict=True)]

    def export(self) -> torch.fx.GraphModule:
        """Each differentiable op at its most probable candidate, frozen (the supernet's
        op choices are set to them; its arch params are untouched)."""
        self.supernet.set_choices(argmax_choices(self))
        return freeze(self.supernet)


def _grads(loss: torch.Tensor, params: list[nn.Parameter]) -> list[torch.Tensor]:
    """``d loss / d params``, zeros for the parameters the loss does not reach."""
    found = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g.detach()
            for p, g in zip(params, found, strict=True)]


def _restore(weights: list[nn.Parameter], values: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, v in zip(weights, values, strict=True):
            p.copy_(v)
