"""Equivalence oracles shared by the tests: pruning is checked by numbers, not shapes."""

from __future__ import annotations

import torch
from torch import nn

from fxrazor.verify.oracle import zero_pruned_channels

__all__ = ["zero_pruned_channels", "count_params", "assert_close"]


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def assert_close(actual, expected, rtol=1e-4, atol=1e-4):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)
