"""Candidate ops whose results are easy to work out by hand, for the NAS mutable tests."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["Scale", "Forbidden", "softmax_by_hand"]


class Scale(nn.Module):
    """Multiplies its input by a constant: easy to predict by hand."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * self.factor


class Forbidden(nn.Module):
    """Fails the test if it is ever run."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("this candidate must not run")


def softmax_by_hand(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]
