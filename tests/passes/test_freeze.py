"""Freezing (passes/freeze.py): a plain GraphModule of the chosen subnet, equal to the supernet."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxrazor
from fxrazor.errors import (
    InvalidChoiceError,
)


def test_layers_keep_their_own_mode_and_containers_take_the_models() -> None:
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Dropout(0.5)),
        nn.Conv2d(8, 4, 1),
    ).eval()
    model[0][2].train()  # e.g. Monte-Carlo dropout in an evaluated model
    sn = fxrazor.convert(model, torch.randn(1, 3, 6, 6))
    expected = {"": False, "0": False, "0.0": False, "0.1": False, "0.2": True, "1": False}
    assert {name: m.training for name, m in sn.graph_module.named_modules()} == expected
    frozen = fxrazor.freeze(sn)
    assert {name: m.training for name, m in frozen.named_modules()} == expected


def test_freeze_keeps_the_chosen_candidate_of_a_one_shot_op() -> None:
    from fxrazor.mutables import OneShotMutableOP

    class Searchable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 1)
            self.op = OneShotMutableOP({"k3": nn.Conv2d(8, 8, 3, padding=1),
                                        "k1": nn.Conv2d(8, 8, 1)})
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.op(self.stem(x)))

    torch.manual_seed(0)
    model, x = Searchable().eval(), torch.randn(1, 3, 6, 6)
    sn = fxrazor.convert(model, x)
    op = sn.graph_module.get_submodule("op")
    op.current_choice = "k1"
    frozen = fxrazor.freeze(sn)
    assert isinstance(frozen.get_submodule("op"), nn.Conv2d)
    assert frozen.get_submodule("op").kernel_size == (1, 1)
    torch.testing.assert_close(frozen(x), sn(x))
    torch.testing.assert_close(frozen(x), model.head(model.op.candidates["k1"](model.stem(x))))
    op.current_choice = None
    with pytest.raises(InvalidChoiceError, match="'op' has no current choice"):
        fxrazor.freeze(sn)
