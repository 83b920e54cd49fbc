"""Contraction rules: functional linear, matmul, einsum, functional layer norm, attention."""

from __future__ import annotations

import torch
from small_models import (
    FunctionalLinear,
)

import fxrazor


def test_functional_linear_hidden_layer_is_prunable() -> None:
    torch.manual_seed(0)
    model = FunctionalLinear().eval()
    x = torch.randn(2, 4)
    sn = fxrazor.convert(model, x)
    assert [u.num_channels for u in sn.units] == [8]
    sn.set_choices({sn.units[0].name: 5})
    assert fxrazor.freeze(sn).get_submodule("out").in_features == 5
