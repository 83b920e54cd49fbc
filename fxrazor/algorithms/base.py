"""What every training algorithm shares: a supernet, a seeded sampler, checked batches and
optimizers, one gradient synchronisation per step under ``torch.distributed``, export.

An algorithm is a plain ``nn.Module`` around a supernet (``algo.supernet``). A subclass
writes :meth:`BaseAlgorithm._step`: the forward and backward passes of one step (several
for a sandwich), returning its losses; :meth:`train_step` checks the batch and the
optimizer *before* any weight changes, zeroes the gradients, runs ``_step``, averages the
gradients over the ranks of an initialised process group once, and steps the optimizer.

Sampling is a function of ``seed`` and the step count only (:meth:`rng`,
:meth:`sample`): every rank of a group draws the same subnet without a broadcast, and a
run can be replayed. Gradients are averaged by the algorithm itself (one flat
all-reduce), so the supernet is not wrapped in ``DistributedDataParallel``: the
sandwich's several backward passes accumulate locally, weights that a subnet leaves
unused need no ``find_unused_parameters``, and ranks that each take an equal share of
the batch train exactly as one process on the whole batch (a mean-reduced loss).

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> class Plain(BaseAlgorithm):
    ...     def _step(self, inputs, targets):
    ...         loss = self.criterion(self(inputs), targets)
    ...         loss.backward()
    ...         return {"loss": loss}
    >>> algo = Plain(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)),
    ...              torch.randn(2, 4))
    >>> opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.1)
    >>> sorted(algo.train_step((torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])), opt))
    ['loss']
    >>> algo.step_count
    1
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from fxrazor.api import convert, freeze
from fxrazor.errors import InvalidArgumentError
from fxrazor.supernet import Supernet

__all__ = ["BaseAlgorithm", "Batch", "distributed_world"]

Batch = tuple[Any, Any]
Criterion = Callable[[Any, Any], torch.Tensor]


def distributed_world() -> int:
    """The size of the initialised default process group (1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _tensors(inputs: Any) -> list[torch.Tensor]:
    if isinstance(inputs, torch.Tensor):
        return [inputs]
    if isinstance(inputs, Mapping):
        return [v for v in inputs.values() if isinstance(v, torch.Tensor)]
    if isinstance(inputs, Sequence) and not isinstance(inputs, (str, bytes)):
        return [v for v in inputs if isinstance(v, torch.Tensor)]
    return []


class BaseAlgorithm(nn.Module):
    """A training algorithm around a supernet (see the module doc).

    Args:
        model: a model (converted here with ``example_inputs`` and ``convert_options``)
            or a :class:`~fxrazor.Supernet` (used as it is).
        example_inputs: the inputs to trace ``model`` with (not for a supernet).
        seed: the sampler's seed: the subnets drawn at step ``t`` depend on
            ``(seed, t)`` only.
        criterion: ``criterion(outputs, targets) -> loss`` (cross-entropy by default).
        **convert_options: passed to :func:`fxrazor.convert` (``unit=...`` etc.).
    """

    #: The unit type a subclass converts with when the caller names none.
    default_unit: str = "sequential"

    def __init__(self, model: nn.Module, example_inputs: Any = None, *, seed: int = 0,
                 criterion: Criterion | None = None, **convert_options: Any) -> None:
        super().__init__()
        if isinstance(model, Supernet):
            if example_inputs is not None or convert_options:
                raise InvalidArgumentError(
                    f"{type(self).__name__}: a Supernet is used as it is; leave out "
                    f"example_inputs and convert options (they were given at convert)")
            supernet = model
        else:
            if example_inputs is None:
                raise InvalidArgumentError(
                    f"{type(self).__name__} needs example_inputs to convert the model "
                    f"(or pass a Supernet from fxrazor.convert)")
            convert_options.setdefault("unit", self.default_unit)
            supernet = convert(model, example_inputs, **convert_options)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise InvalidArgumentError(f"seed must be an int, got {seed!r}")
        self.supernet = supernet
        self.seed = seed
        self.step_count = 0
        self.criterion: Criterion = criterion if criterion is not None else nn.CrossEntropyLoss()

    # ---- sampling ------------------------------------------------------------------------
    def rng(self, salt: str = "") -> random.Random:
        """A random generator for this step: a function of ``(seed, step_count, salt)``."""
        digest = hashlib.sha256(f"{self.seed}:{self.step_count}:{salt}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "little"))

    @contextmanager
    def seeded(self, salt: str = "") -> Iterator[None]:
        """Python's ``random`` (which the units sample with) seeded by :meth:`rng` for the
        block, then put back."""
        state = random.getstate()
        random.seed(self.rng(salt).getrandbits(64))
        try:
            yield
        finally:
            random.setstate(state)

    def sample(self, salt: str = "", mode: str = "random") -> dict[str, Any]:
        """The supernet's choices drawn for this step (``mode``: random, max or min)."""
        with self.seeded(salt):
            return self.supernet.sample_choices(mode)

    # ---- checks --------------------------------------------------------------------------
    def check_batch(self, batch: Any) -> Batch:
        """``(inputs, targets)`` with inputs shaped as the example inputs but for the batch
        size, and as many targets as inputs; else :class:`InvalidArgumentError`."""
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise InvalidArgumentError(
                f"{type(self).__name__}.train_step takes batch=(inputs, targets), got a "
                f"{type(batch).__name__}")
        inputs, targets = batch
        given = _tensors(inputs)
        examples = [a for a in self.supernet.example_args if isinstance(a, torch.Tensor)]
        if not given:
            raise InvalidArgumentError("the batch's inputs hold no tensor")
        if not isinstance(inputs, Mapping) and len(given) == len(examples):
            for i, (x, e) in enumerate(zip(given, examples, strict=True)):
                if x.dim() != e.dim() or tuple(x.shape[1:]) != tuple(e.shape[1:]):
                    raise InvalidArgumentError(
                        f"input {i} of the batch has shape {tuple(x.shape)}; the supernet was "
                        f"traced with {tuple(e.shape)}: only the batch dimension may differ")
        size = given[0].shape[0] if given[0].dim() else None
        if isinstance(targets, torch.Tensor) and targets.dim() and size is not None \
                and targets.shape[0] != size:
            raise InvalidArgumentError(
                f"the batch has {size} inputs but {targets.shape[0]} targets")
        return inputs, targets

    def check_optimizer(self, optimizer: torch.optim.Optimizer,
                        wanted: Sequence[nn.Parameter] | None = None,
                        role: str = "weights") -> None:
        """The optimizer holds only this algorithm's parameters and at least one of
        ``wanted`` (the supernet's weights by default); else InvalidArgumentError."""
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise InvalidArgumentError(
                f"expected a torch.optim.Optimizer for the {role}, got {type(optimizer).__name__}")
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        mine = {id(p) for p in self.parameters()}
        if held - mine:
            raise InvalidArgumentError(
                f"the {role}' optimizer holds {len(held - mine)} parameters that are not "
                f"this algorithm's (built for another model, or before a copy?); build it "
                f"from algo.supernet.model_params() after making the algorithm")
        wanted = list(self.supernet.model_params()) if wanted is None else list(wanted)
        if wanted and not held & {id(p) for p in wanted}:
            raise InvalidArgumentError(
                f"the {role}' optimizer holds none of the parameters it should train; "
                f"build it from algo.supernet.model_params()" if role == "weights" else
                f"the {role}' optimizer holds none of the parameters it should train")

    # ---- the step ------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The supernet at its current choices."""
        if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
            return self.supernet(**args[0])
        if len(args) == 1 and isinstance(args[0], (tuple, list)) and not kwargs:
            return self.supernet(*args[0])
        return self.supernet(*args, **kwargs)

    def _step(self, inputs: Any, targets: Any) -> Mapping[str, Any]:
        """One step's forward and backward passes (no optimizer step); the losses."""
        raise NotImplementedError

    def train_step(self, batch: Any, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """Check ``batch`` and ``optimizer``, run the step's passes, average the gradients
        over the ranks (once), step the optimizer; the losses as floats."""
        inputs, targets = self.check_batch(batch)
        self.check_optimizer(optimizer)
        self.train()
        optimizer.zero_grad(set_to_none=True)
        losses = self._step(inputs, targets)
        self.sync_gradients(p for g in optimizer.param_groups for p in g["params"])
        optimizer.step()
        self.step_count += 1
        # (a subclass may return losses that still hold their graph)
        return {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
                for k, v in losses.items()}

    def sync_gradients(self, params: Any) -> None:
        """Average the gradients of ``params`` over the ranks of the default process group,
        in one flat all-reduce (nothing without a group). Every rank trains the same
        subnet, so the same parameters have gradients everywhere; that is checked."""
        if distributed_world() == 1:
            return
        with_grad = [p for p in dict.fromkeys(params) if p.grad is not None]
        count = torch.tensor([len(with_grad)], dtype=torch.long)
        most = count.clone()
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
        if int(most) != len(with_grad):
            raise InvalidArgumentError(
                "ranks computed gradients for different parameters: they trained different "
                "subnets (draw them with algo.sample(), a function of the seed and step)")
        if not with_grad:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in with_grad])  # type: ignore[union-attr]
        dist.all_reduce(flat)
        flat /= distributed_world()
        offset = 0
        for p in with_grad:
            n = p.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p))  # type: ignore[union-attr]
            offset += n

    def export(self) -> torch.fx.GraphModule:
        """The frozen subnet of the current choices (a plain ``GraphModule``)."""
        return freeze(self.supernet)
