"""What the differentiable algorithms (DARTS, DSNAS, DMCP) share: a second optimizer for
the architecture parameters, checked against the weights' one before any step; backward
passes that reach only the parameters a step should change; torch's random generators
seeded from the algorithm's step for samplers that draw with torch.

Example:
    >>> import torch
    >>> from torch import nn
    >>> w, a = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    >>> backward_into((w * a).sum(), [w]); w.grad.tolist(), a.grad
    ([1.0, 1.0], None)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from fxrazor.errors import InvalidArgumentError

if TYPE_CHECKING:
    from fxrazor.algorithms.base import BaseAlgorithm

__all__ = ["optimizer_params", "check_apart", "check_optimizers", "backward_into", "torch_seeded",
           "step_seed"]


def optimizer_params(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    """The optimizer's parameters, each once, in group order."""
    return list(dict.fromkeys(p for g in optimizer.param_groups for p in g["params"]))


def check_apart(optimizer: torch.optim.Optimizer, others: Sequence[nn.Parameter],
                role: str, others_role: str) -> None:
    """Refuse an optimizer that holds any of ``others``: two optimizers stepping the same
    parameter would update it twice per step, on two losses."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise InvalidArgumentError(
            f"expected a torch.optim.Optimizer for the {role}, got {type(optimizer).__name__}")
    held = {id(p) for p in optimizer_params(optimizer)}
    shared = sum(1 for p in others if id(p) in held)
    if shared:
        raise InvalidArgumentError(
            f"the {role}' optimizer also holds {shared} of the {others_role}; give each its "
            f"own optimizer (algo.supernet.model_params() for the weights, "
            f"algo.arch_parameters() for the architecture)")


def backward_into(loss: torch.Tensor, params: Iterable[torch.Tensor]) -> None:
    """``loss.backward()`` accumulating into ``params`` only (leaves that require grad and
    that the loss reaches); the other leaves' ``.grad`` stay as they are."""
    wanted = [p for p in dict.fromkeys(params) if p.requires_grad]
    if not wanted or not loss.requires_grad:
        return
    grads = torch.autograd.grad(loss, wanted, allow_unused=True)
    for p, g in zip(wanted, grads, strict=True):
        if g is None:
            continue
        if p.grad is None:
            p.grad = g.detach().clone()
        else:
            p.grad.add_(g)


def step_seed(algo: BaseAlgorithm, salt: str) -> int:
    """A 63-bit seed for this step: a function of ``(seed, step_count, salt)``."""
    return algo.rng(salt).getrandbits(63)


@contextmanager
def torch_seeded(algo: BaseAlgorithm, salt: str) -> Iterator[None]:
    """torch's generators (CPU, and the current CUDA device when the algorithm lives there)
    seeded by :func:`step_seed` for the block, then put back: ops that draw with
    ``torch.multinomial`` sample the same on every rank and in a replay."""
    devices = []
    if torch.cuda.is_available() and any(p.is_cuda for p in algo.parameters()):
        devices = [torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(step_seed(algo, salt))
        yield


def check_optimizers(algo: BaseAlgorithm, optimizer: torch.optim.Optimizer,
                     arch_optimizer: torch.optim.Optimizer | None, missing: str) -> None:
    """The weights' optimizer holds weights and no arch param, ``arch_optimizer`` is given
    (else ``missing`` is the error) and holds arch params and no weight."""
    arch = algo.arch_parameters()  # type: ignore[attr-defined,operator]
    algo.check_optimizer(optimizer)
    check_apart(optimizer, arch, "weights", "architecture parameters")
    if arch_optimizer is None:
        raise InvalidArgumentError(missing)
    algo.check_optimizer(arch_optimizer, arch, role="architecture")
    check_apart(arch_optimizer, list(algo.supernet.model_params()), "architecture", "weights")
