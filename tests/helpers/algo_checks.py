"""Checks the algorithm tests share: parameter snapshots and refusals that change nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from fxrazor.errors import InvalidArgumentError

__all__ = ["weights_of", "snapshot", "unchanged", "refused"]


def weights_of(algo: Any) -> list[torch.Tensor]:
    """Copies of the supernet's weights (not the arch params)."""
    return [p.detach().clone() for p in algo.supernet.model_params()]


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def unchanged(module: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in module.state_dict().items())


def refused(algo: nn.Module, call: Callable[[], Any]) -> None:
    """``call`` raises InvalidArgumentError and leaves every parameter and buffer as it was."""
    before = snapshot(algo)
    with pytest.raises(InvalidArgumentError):
        call()
    assert unchanged(algo, before)
