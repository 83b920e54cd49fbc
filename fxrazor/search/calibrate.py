"""Re-estimate the BatchNorm statistics of the current subnet before it is scored.

A supernet's BatchNorm statistics were gathered over whatever subnets were trained; a
subnet scored with them is misjudged. :func:`calibrate_bn` forgets them and averages the
statistics of ``num_batches`` batches run through the current subnet (BatchNorm layers in
training mode with a cumulative average, everything else as it was, no gradients).

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.Conv2d(8, 2, 1)).eval()
    >>> sn = fxrazor.convert(model, torch.randn(1, 3, 4, 4))
    >>> calibrate_bn(sn, [torch.randn(2, 3, 4, 4) for _ in range(3)])
    3
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from fxrazor.errors import InvalidArgumentError

__all__ = ["calibrate_bn"]


def _run(model: nn.Module, batch: Any) -> Any:
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(batch[0])  # (inputs, targets), as loaders give them
    return model(batch)


def calibrate_bn(sn: nn.Module, loader: Iterable[Any], num_batches: int | None = None, *,
                 forward: Callable[[nn.Module, Any], Any] | None = None) -> int:
    """Reset every BatchNorm's statistics and gather them anew over the first
    ``num_batches`` batches of ``loader`` (all of them when None) through the current
    subnet; returns the number of batches run. ``forward(sn, batch)`` runs one batch
    (default: ``sn(batch)``, ``sn(batch[0])`` for a tuple, ``sn(**batch)`` for a dict).

    Afterwards the statistics are this subnet's: calibrate again before scoring another.
    """
    if num_batches is not None and (not isinstance(num_batches, int) or num_batches < 1):
        raise InvalidArgumentError(f"num_batches must be a positive int, got {num_batches!r}")
    norms = [m for m in sn.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m, m.training, m.momentum) for m in norms]
    run = forward or _run
    count = 0
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
            m.train()
        with torch.no_grad():
            for batch in loader:
                if num_batches is not None and count >= num_batches:
                    break
                run(sn, batch)
                count += 1
    finally:
        for m, training, momentum in saved:
            m.train(training)
            m.momentum = momentum
    if count == 0:
        raise InvalidArgumentError("calibrate_bn got no batch from the loader")
    return count
