"""A layer whose input channels are fixed upstream names that cause in its pin, not itself."""

from __future__ import annotations

import torch
from torch import nn

import fxrazor


class _Shifted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c, self.d, self.e = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(x)
        return self.d(torch.roll(y, 1, dims=1).relu()) + self.e(y.softmax(1))


def _reasons(sn: fxrazor.Supernet) -> dict[str, str]:
    text = fxrazor.summary(sn, flops=False)
    rows = text.split("Pinned channels:")[1].splitlines()[3:]
    return {row.split()[0].rstrip(","): row for row in rows if row.strip()}


def test_the_downstream_layer_names_the_op_that_pinned_its_input() -> None:
    reasons = _reasons(fxrazor.convert(_Shifted(), torch.randn(1, 3, 8, 8)))
    # the roll reaches d through a relu (element-wise): the cause travels with the tensor
    assert "d.in" in reasons and "torch.roll (node 'roll') rolls along it" in reasons["d.in"]
    assert "softmax (node 'softmax') mixes values along it" in reasons["e.in"]
    assert "model input 'x'" in reasons["c.in"]


def test_an_op_without_a_rule_is_named_on_the_layer_after_it() -> None:
    class Opaque(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flip(1)

    model = nn.Sequential(nn.Conv2d(3, 8, 3), Opaque(), nn.Conv2d(8, 4, 1))
    sn = fxrazor.convert(model, torch.randn(1, 3, 8, 8), leaf_modules=(Opaque,))
    reasons = _reasons(sn)
    assert "Opaque '1' has no channel rule" in reasons["2.in"]
