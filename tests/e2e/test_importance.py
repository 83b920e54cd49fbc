"""Importance criteria per unit, computed by hand on a conv -> BN -> conv network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxrazor
from fxrazor.errors import InvalidArgumentError
from fxrazor.importance import importance


def _net() -> tuple[nn.Module, fxrazor.Supernet, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.5, -2.0, 1.0, 0.1]))
    x = torch.randn(2, 3, 6, 6)
    return model, fxrazor.convert(model.eval(), x), x


def test_magnitude_is_the_mean_over_rows_scale_and_columns() -> None:
    model, sn, _ = _net()
    w0, g, w1 = model[0].weight, model[1].weight, model[3].weight
    rows, cols = w0.abs().sum((1, 2, 3)), w1.abs().sum((0, 2, 3))
    want = torch.stack([rows, g.abs(), cols]).mean(0)
    torch.testing.assert_close(importance(sn, "l1")["0"], want)
    squares = torch.stack([w0.pow(2).sum((1, 2, 3)), g.pow(2), w1.pow(2).sum((0, 2, 3))])
    torch.testing.assert_close(importance(sn, "l2", aggregate="max")["0"], squares.amax(0))
    got = importance(sn, "l1", normalize="mean")["0"]
    torch.testing.assert_close(got, want / want.mean())


def test_bn_scale_is_the_batch_norm_weight() -> None:
    _, sn, _ = _net()
    torch.testing.assert_close(importance(sn, "bn_scale")["0"],
                               torch.tensor([0.5, 2.0, 1.0, 0.1]))


def test_taylor_needs_gradients_and_is_weight_times_gradient() -> None:
    model, sn, x = _net()
    with pytest.raises(InvalidArgumentError, match="needs gradients"):
        importance(sn, "taylor")
    got = importance(sn, "taylor", calibrate=lambda s: s(x).square().sum().backward())
    conv0 = sn.graph_module.get_submodule("0")
    bn, conv1 = sn.graph_module.get_submodule("1"), sn.graph_module.get_submodule("3")
    parts = [(conv0.weight * conv0.weight.grad).abs().sum((1, 2, 3)),
             (bn.weight * bn.weight.grad).abs(),
             (conv1.weight * conv1.weight.grad).abs().sum((0, 2, 3))]
    torch.testing.assert_close(got["0"], torch.stack(parts).mean(0).detach())


def test_a_callable_criterion_and_bad_options() -> None:
    _, sn, _ = _net()
    ones = importance(sn, lambda w, dim, role: torch.ones(w.shape[dim]), aggregate="sum")
    assert ones["0"].tolist() == [3.0, 3.0, 3.0, 3.0]  # three members, one position each
    for bad in ({"criterion": "l3"}, {"aggregate": "median"}, {"normalize": "z"}):
        with pytest.raises(InvalidArgumentError):
            importance(sn, **bad)
