"""The shared equivalence check (fxrazor.verify.equivalence): its numbers and what it catches."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from small_models import conv_bn_chain
from torch import nn

import fxrazor
from fxrazor.verify.equivalence import (
    DEFAULT_RTOL,
    check_full_width,
    check_subnet,
    oracle_applies,
    output_error,
    output_scale,
    within,
    zero_oracle_error,
)


def test_output_error_is_the_largest_difference_over_nested_outputs() -> None:
    a = {"out": torch.tensor([1.0, 2.0]), "aux": (torch.tensor([[0.0]]), 3)}
    b = {"aux": (torch.tensor([[-0.25]]), 3), "out": torch.tensor([1.5, 2.0])}  # keys reordered
    assert output_error(a, b) == 0.5
    assert output_error(OrderedDict(a), a) == 0.0
    assert output_error([torch.ones(2)], (torch.ones(2),)) == 0.0  # TorchScript gives lists
    assert output_error(torch.tensor([1, 5]), torch.tensor([1, 2])) == 3.0  # ints too
    assert output_error(torch.empty(0, 3), torch.empty(0, 3)) == 0.0


@pytest.mark.parametrize(("actual", "expected"), [
    (torch.zeros(2), torch.zeros(3)),
    ({"out": torch.zeros(2)}, {"logits": torch.zeros(2)}),
    ((torch.zeros(2),), (torch.zeros(2), torch.zeros(2))),
    ((torch.zeros(2), 1), (torch.zeros(2), 2)),
    (torch.zeros(2), (torch.zeros(2),)),
])
def test_output_error_of_different_structures_is_infinite(actual, expected) -> None:
    assert output_error(actual, expected) == math.inf
    assert not within(output_error(actual, expected), 1.0)


def test_a_nan_fails_every_tolerance() -> None:
    error = output_error(torch.tensor([0.0, math.nan]), torch.zeros(2))
    assert math.isnan(error) and not within(error, 1.0, rtol=1e9)


def test_output_scale_and_within() -> None:
    assert output_scale({"a": torch.tensor([-4.0, 1.0]), "b": [torch.tensor([2.0])]}) == 4.0
    assert output_scale(torch.empty(0)) == 0.0
    assert DEFAULT_RTOL == 1e-4
    assert within(1e-4, 0.5) and not within(1.1e-4, 0.5)  # small outputs: relative to 1
    assert within(1e-3, 10.0) and not within(1.1e-3, 10.0)


def test_oracle_applies_unless_a_channel_norm_is_a_unit_member() -> None:
    x = torch.randn(2, 3, 4, 4)
    assert oracle_applies(fxrazor.convert(*conv_bn_chain()))
    gn = nn.Sequential(nn.Conv2d(3, 8, 1), nn.GroupNorm(2, 8), nn.Conv2d(8, 2, 1))
    assert not oracle_applies(fxrazor.convert(gn, x))
    ln = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    assert not oracle_applies(fxrazor.convert(ln, torch.randn(5, 4)))
    rms = nn.Sequential(nn.Linear(4, 8), nn.RMSNorm(8), nn.Linear(8, 2))
    assert not oracle_applies(fxrazor.convert(rms, torch.randn(5, 4)))
    # a norm whose channels are all pinned (the model's input) normalises no pruned channel
    pinned = nn.Sequential(nn.GroupNorm(1, 3), nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 2, 1))
    assert oracle_applies(fxrazor.convert(pinned, x))


def test_check_subnet_measures_frozen_and_oracle_errors() -> None:
    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x)
    full = check_full_width(model, sn, x)
    with torch.no_grad():
        scale = float(model(x).abs().max())
    assert full.error == 0.0 and full.scale == scale and full.passed()
    sn.set_choices({"0": 3, "3": 2})
    check = check_subnet(model, sn, x)
    assert check.frozen.get_submodule("0").out_channels == 3
    torch.testing.assert_close(check.frozen_output, check.frozen(x), rtol=0, atol=0)
    with torch.no_grad():
        assert check.output_scale == float(sn(x).abs().max())
    assert check.frozen_error < 1e-6 and check.oracle_error is not None
    assert check.oracle_error < 1e-6 and check.passed()
    assert check_subnet(model, sn, x, oracle=False).oracle_error is None


def test_check_subnet_catches_a_frozen_module_that_differs() -> None:
    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x)
    sn.set_choices({"0": 3})
    wrong = fxrazor.freeze(sn)
    with torch.no_grad():
        wrong.get_submodule("0").bias[0] += 1.0
    check = check_subnet(model, sn, x, frozen=wrong)
    assert check.frozen_error > 1e-3 and check.oracle_error > 1e-3 and not check.passed()
    assert check.frozen is wrong


def test_zero_oracle_catches_other_kept_channels() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 2, 1)).eval()
    x = torch.randn(1, 3, 4, 4)
    sn = fxrazor.convert(model, x)
    sn.set_choices({"0": 3})  # keeps channels 0-2
    w1, b1, w2, b2 = (p.detach() for p in model.parameters())
    kept = F.conv2d(F.relu(F.conv2d(x, w1[:3], b1[:3])), w2[:, :3], b2)
    other = F.conv2d(F.relu(F.conv2d(x, w1[1:4], b1[1:4])), w2[:, 1:4], b2)
    assert zero_oracle_error(model, sn, x, kept) < 1e-6
    assert zero_oracle_error(model, sn, x, other) > 1e-3


def test_inputs_as_tuple_and_dict() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x) * y)

    model, x, y = Two(), torch.randn(3, 4), torch.rand(3, 1)  # y scales each row
    for inputs in [(x, y), {"x": x, "y": y}]:
        sn = fxrazor.convert(model, inputs)
        assert check_full_width(model, sn, inputs).error == 0.0
        sn.set_choices({"a": 4})
        assert check_subnet(model, sn, inputs).passed()
