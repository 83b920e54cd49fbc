"""Model factories for the command line's ``package.module:factory`` form (tests/e2e/
test_cli_*.py): ``build`` returns a model and its example inputs, ``model_only`` a model
alone, ``not_a_model`` something else; ``zero_head`` and ``constant_output`` give constant
outputs (the exactness check must notice), ``broken`` raises.

Example:
    >>> model, x = build()
    >>> tuple(model(x).shape)
    (2, 10)
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SmallNet", "build", "model_only", "not_a_model", "zero_head", "constant_output",
           "broken"]


class SmallNet(nn.Module):
    """Two conv blocks with BatchNorm and a residual add, pooled into a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32),
                                   nn.ReLU(), nn.Conv2d(32, 16, 3, padding=1),
                                   nn.BatchNorm2d(16))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = torch.relu(h + self.block(h))
        return self.head(h.mean((2, 3)))


def build() -> tuple[nn.Module, torch.Tensor]:
    """A small CNN and a batch of two 16x16 images."""
    return SmallNet(), torch.randn(2, 3, 16, 16)


def model_only() -> nn.Module:
    return SmallNet()


def not_a_model() -> str:
    return "a string"


def zero_head() -> tuple[nn.Module, torch.Tensor]:
    """A CNN whose head is zero-initialised (as torchvision's ViT): its output is all 0."""
    model = SmallNet()
    nn.init.zeros_(model.head.weight)
    nn.init.zeros_(model.head.bias)
    return model, torch.randn(1, 3, 16, 16)


class _Silenced(SmallNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 0.0


def constant_output() -> tuple[nn.Module, torch.Tensor]:
    """A CNN that multiplies its output by 0: no weights make it say anything."""
    return _Silenced(), torch.randn(1, 3, 16, 16)


def broken() -> nn.Module:
    """A factory with a bug of its own: the command keeps its traceback."""
    raise RuntimeError("a bug in the user's factory")
