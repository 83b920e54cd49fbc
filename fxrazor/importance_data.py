"""Calibration data for the data-driven criteria of :mod:`fxrazor.importance`.

The ``activation`` and ``wanda`` criteria read activations, and ``taylor`` reads gradients,
from batches a user supplies in one of two ways:

* ``forward_loop(model)``: a callable that runs batches through the model it is given
  (ModelOpt's convention); for ``taylor`` it also runs the loss backward;
* ``loader``: an iterable of batches. A batch is the model's inputs (a tensor, or a dict of
  keyword inputs) or an ``(inputs, targets)`` tuple or list (a ``DataLoader``'s usual
  ``(x, y)``; several positional inputs go as ``((x1, x2), y)``). For ``taylor`` the loss
  is ``loss_fn(outputs, targets)`` (default: cross-entropy) or, for batches without
  targets, ``loss_fn(outputs)`` (then ``loss_fn`` is required).

Calibration runs the supernet at full width (``Supernet.full_width``: a pruned channel of
the current subnet would read as zero and rank last whatever it carries) and in eval mode
(BatchNorm statistics and dropout stay as they are); the choices, every module's training
flag and, for ``taylor``, the parameters' ``.grad`` are restored afterwards, and the hooks
removed, even when a batch fails.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> sn = fxrazor.convert(nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)), torch.randn(1, 2))
    >>> with torch.no_grad():
    ...     _ = sn.graph_module.get_submodule("0").weight.copy_(torch.eye(3, 2))
    ...     _ = sn.graph_module.get_submodule("0").bias.zero_()
    >>> cal = Calibration(loader=[torch.tensor([[3.0, 4.0]])])
    >>> square_sums(sn, [("0", "out")], cal)[("0", "out")].tolist()
    [9.0, 16.0, 0.0]
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fxrazor.errors import InvalidArgumentError
from fxrazor.supernet import Supernet

__all__ = ["Calibration", "ForwardLoop", "LossFn", "activation_dim", "calibrating",
           "restored_grads", "square_sums"]

log = logging.getLogger(__name__)

ForwardLoop = Callable[[nn.Module], Any]
LossFn = Callable[..., torch.Tensor]
Site = tuple[str, str]  # (layer path, "in" | "out"): a layer's input or output activations


@dataclass(frozen=True)
class Calibration:
    """Where calibration batches come from: exactly one of ``forward_loop`` or ``loader``.

    Attributes:
        forward_loop: ``forward_loop(model)`` runs batches through ``model``.
        loader: an iterable of batches (see the module doc).
        loss_fn: the loss for ``taylor`` over a ``loader`` (default: cross-entropy).
    """

    forward_loop: ForwardLoop | None = None
    loader: Iterable[Any] | None = None
    loss_fn: LossFn | None = None

    def __post_init__(self) -> None:
        if (self.forward_loop is None) == (self.loader is None):
            raise InvalidArgumentError(
                "calibration needs exactly one of forward_loop=fn (fn(model) runs batches) "
                "or loader=batches; got " + ("both" if self.forward_loop else "neither"))
        if self.forward_loop is not None and not callable(self.forward_loop):
            raise InvalidArgumentError("forward_loop must be a callable fn(model)")
        if self.loss_fn is not None and self.loader is None:
            raise InvalidArgumentError(
                "loss_fn applies to loader= batches; a forward_loop computes its own loss")

    def run(self, sn: Supernet, backward: bool = False) -> int:
        """Run every batch through ``sn`` (a loss backward after each if ``backward``);
        returns the number of forwards, and raises if there were none."""
        forwards = [0]

        def count(module: nn.Module, args: Any) -> None:
            forwards[0] += 1

        handle = sn.graph_module.register_forward_pre_hook(count)
        try:
            if self.forward_loop is not None:
                self.forward_loop(sn)
            else:
                assert self.loader is not None  # (one of the two, checked)
                for batch in self.loader:
                    self._step(sn, batch, backward)
        finally:
            handle.remove()
        if forwards[0] == 0:
            source = "forward_loop ran no batch through the model it was given" \
                if self.forward_loop is not None else "loader yielded no batch"
            raise InvalidArgumentError(f"calibration saw no data: {source}; give it at least "
                                       f"one batch")
        return forwards[0]

    def _step(self, sn: Supernet, batch: Any, backward: bool) -> None:
        paired = isinstance(batch, (tuple, list))
        inputs, targets = (batch[0], batch[1] if len(batch) > 1 else None) if paired \
            else (batch, None)
        outputs = _call(sn, inputs)
        if not backward:
            return
        if targets is None and self.loss_fn is None:
            raise InvalidArgumentError(
                "taylor over a loader of bare inputs needs loss_fn=fn (fn(outputs) -> loss), "
                "or batches of (inputs, targets) for the default cross-entropy")
        if targets is None:
            assert self.loss_fn is not None  # (checked above)
            loss = self.loss_fn(outputs)
        else:
            loss = (self.loss_fn or F.cross_entropy)(outputs, targets)
        loss.backward()


def _call(sn: Supernet, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return sn(**inputs)
    if isinstance(inputs, (tuple, list)):
        return sn(*inputs)
    return sn(inputs)


@contextlib.contextmanager
def calibrating(sn: Supernet) -> Iterator[None]:
    """Full width and eval mode inside the block; every module's training flag restored
    after it (the choices are untouched: ``full_width`` only overrides them)."""
    flags = [(m, m.training) for m in sn.modules()]
    with sn.full_width():
        try:
            sn.eval()
            yield
        finally:
            for module, training in flags:
                module.training = training


@contextlib.contextmanager
def restored_grads(sn: Supernet) -> Iterator[None]:
    """Parameters' ``.grad`` cleared inside the block and put back after it, so that a
    calibration's gradients neither mix with the user's nor outlive the scoring."""
    saved = [(p, p.grad) for p in sn.parameters()]
    try:
        for p, _ in saved:
            p.grad = None
        yield
    finally:
        for p, grad in saved:
            p.grad = grad


def activation_dim(module: nn.Module, x: torch.Tensor) -> int | None:
    """The dim of ``x`` (an input or output of ``module``) that holds its channels, or None
    for a layer whose layout is not known here."""
    if isinstance(module, (nn.Linear, nn.Embedding, nn.LayerNorm, nn.RMSNorm)):
        return x.ndim - 1
    if isinstance(module, nn.modules.conv._ConvNd):  # (N, C, *spatial) or unbatched (C, ...)
        return x.ndim - len(module.kernel_size) - 1
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        return x.ndim - module._get_no_batch_dim()
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
        return 1
    return None


def _first_tensor(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    return args[0] if args else next(iter(kwargs.values()), None)


def square_sums(sn: Supernet, sites: Iterable[Site], calibration: Calibration
                ) -> dict[Site, torch.Tensor]:
    """``{site: sum of x**2 per channel}`` over every calibration batch and every sample and
    position, for each ``(layer path, "in" | "out")`` site; sites whose layer has an
    unknown layout or never ran are missing. Runs under :func:`calibrating`."""
    sums: dict[Site, torch.Tensor] = {}

    def add(site: Site, module: nn.Module, x: Any) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return
        dim = activation_dim(module, x)
        if dim is None:
            return
        # float32 at least: half-precision squares of large activations overflow
        values = x.detach().float().pow(2).movedim(dim, 0).reshape(x.shape[dim], -1).sum(1)
        sums[site] = sums[site] + values if site in sums else values

    handles = []
    try:
        for target, side in dict.fromkeys(sites):
            module = sn.graph_module.get_submodule(target)
            if side == "in":
                handles.append(module.register_forward_pre_hook(
                    lambda m, a, k, s=(target, side): add(s, m, _first_tensor(a, k)),
                    with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(
                    lambda m, a, out, s=(target, side): add(s, m, out)))
        with calibrating(sn), torch.no_grad():
            calibration.run(sn)
    finally:
        for handle in handles:
            handle.remove()
    log.debug("activation sums at %d of the sites", len(sums))
    return sums
