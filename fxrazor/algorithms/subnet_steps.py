"""Small pieces the sampling algorithms share: keeping the supernet's choices across a
step, and reading logits from a model's outputs for distillation.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> sn = fxrazor.convert(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)),
    ...                      torch.randn(1, 4))
    >>> with kept_choices(sn):
    ...     sn.set_choices({"0": 3})
    >>> sn.choices()
    {'0': 8}
    >>> logits_of(torch.zeros(2, 3)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from fxrazor.errors import InvalidArgumentError
from fxrazor.supernet import Supernet

__all__ = ["kept_choices", "logits_of"]


@contextmanager
def kept_choices(supernet: Supernet) -> Iterator[None]:
    """Put the supernet's choices back after the block (also when it raises): a step that
    trains several subnets leaves the subnet the user chose (or a search found) in place."""
    before = supernet.choices()
    try:
        yield
    finally:
        supernet.set_choices(before)


def logits_of(outputs: Any) -> torch.Tensor:
    """The logits in a model's outputs: the tensor itself, a ``logits`` attribute or key
    (Hugging Face outputs), else :class:`InvalidArgumentError`."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    found = outputs.get("logits") if isinstance(outputs, Mapping) else \
        getattr(outputs, "logits", None)
    if isinstance(found, torch.Tensor):
        return found
    raise InvalidArgumentError(
        f"distillation needs the model's logits: a tensor output, or one with a 'logits' "
        f"entry; the model returned a {type(outputs).__name__}")
