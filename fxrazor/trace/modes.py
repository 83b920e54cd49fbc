"""Run a module tree in eval mode and give every module its own mode back.

``module.train(mode)`` sets one mode on a whole tree, but a model may mix modes (an
evaluated model that keeps a Monte-Carlo dropout in training mode). Work that must run in
eval mode (shape runs, FLOP counts) restores each module's mode as it found it.

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).eval()
    >>> _ = model[1].train()
    >>> with evaluating(model):
    ...     any(m.training for m in model.modules())
    False
    >>> [m.training for m in model.modules()]
    [False, False, True]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["evaluating"]


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` and all its children in eval mode for the duration; afterwards (also
    on an exception) every one of them has its earlier mode again."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training
