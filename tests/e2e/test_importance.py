"""Importance criteria per unit, computed by hand on a conv -> BN -> conv network and on
tiny fixed-weight MLPs and convs (activation, wanda, taylor from calibration data)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
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


# ---- data criteria: activation, wanda, taylor from a loader --------------------------------------

# Linear(2, 3) -> ReLU -> Linear(3, 2) with fixed weights and two fixed samples, worked by hand:
#   h = x @ W1.T + b1:  x1 = (1, 2) -> (-1, 5, -1);  x2 = (3, -1) -> (4, -1, -10)
#   relu(h):            (0, 5, 0) and (4, 0, 0)
W1 = [[1.0, -1.0], [0.0, 2.0], [-3.0, 1.0]]
B1 = [0.0, 1.0, 0.0]
W2 = [[2.0, -1.0, 0.5], [0.0, 1.0, 0.0]]
X = [[1.0, 2.0], [3.0, -1.0]]
H_NORMS = [17 ** 0.5, 26 ** 0.5, 101 ** 0.5]  # ||h_j|| over both samples
RELU_NORMS = [4.0, 5.0, 0.0]  # ||relu(h)_j||
WANDA = [4.0 * 2, 5.0 * (1 + 1), 0.0]  # ||relu(h)_j|| * sum_i |W2[i, j]|


def _mlp() -> tuple[nn.Module, fxrazor.Supernet, torch.Tensor]:
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(W1))
        model[0].bias.copy_(torch.tensor(B1))
        model[2].weight.copy_(torch.tensor(W2))
        model[2].bias.zero_()
    return model, fxrazor.convert(model, torch.randn(1, 2)), torch.tensor(X)


def test_activation_is_the_l2_norm_of_the_producers_outputs_over_all_batches() -> None:
    _, sn, x = _mlp()
    got = importance(sn, "activation", loader=[x[:1], (x[1:], torch.tensor([0]))])
    torch.testing.assert_close(got["0"], torch.tensor(H_NORMS))
    at_inputs = importance(sn, "activation", members=("in",),
                           forward_loop=lambda m: [m(row[None]) for row in x])
    torch.testing.assert_close(at_inputs["0"], torch.tensor(RELU_NORMS))


def test_wanda_is_the_input_norm_times_the_column_magnitude() -> None:
    _, sn, x = _mlp()
    torch.testing.assert_close(importance(sn, "wanda", loader=[x])["0"], torch.tensor(WANDA))
    two_batches = importance(sn, "wanda", forward_loop=lambda m: (m(x[:1]), m(x[1:])))
    torch.testing.assert_close(two_batches["0"], torch.tensor(WANDA))


def test_wanda_on_a_conv_takes_the_norm_over_batch_and_space_and_every_kernel_element() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.Conv2d(2, 1, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, -2.0]).view(2, 1, 1, 1))
        model[1].weight.copy_(torch.tensor([[[[1.0, -1.0], [0.0, 2.0]],
                                             [[0.5, 0.0], [0.0, -0.5]]]]))
    x = torch.stack([torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]), -torch.ones(1, 2, 2)])
    sn = fxrazor.convert(model, x)
    # channel 0 carries x (sum of squares 30 + 4), channel 1 carries -2x (4 * 34);
    # conv 1's columns: |1| + |-1| + |0| + |2| = 4 and |0.5| + |-0.5| = 1
    want = torch.tensor([4 * 34 ** 0.5, 1 * 2 * 34 ** 0.5])
    torch.testing.assert_close(importance(sn, "wanda", loader=[x])["0"], want)
    torch.testing.assert_close(importance(sn, "activation", loader=[x])["0"],
                               torch.tensor([34 ** 0.5, 2 * 34 ** 0.5]))


def test_activation_averages_the_conv_and_batch_norm_outputs_at_full_width() -> None:
    model, sn, x = _net()
    sn.set_choices({"0": 2})  # a subnet: calibration still sees every channel
    conv, bn = model[0], model[1]
    h = F.conv2d(x, conv.weight, conv.bias)
    normed = F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False,
                          0.0, bn.eps)
    want = torch.stack([h.pow(2).sum((0, 2, 3)).sqrt(), normed.pow(2).sum((0, 2, 3)).sqrt()])
    got = importance(sn, "activation", loader=[x])["0"]
    torch.testing.assert_close(got, want.mean(0).detach())
    assert sn.choices() == {"0": 2}


def test_taylor_from_a_loader_matches_a_plain_backward_and_restores_the_state() -> None:
    model, sn, x = _mlp()
    y = torch.tensor([0, 1])
    reference = copy.deepcopy(model)
    F.cross_entropy(reference(x), y).backward()
    w1, w2 = reference[0].weight, reference[2].weight
    want = torch.stack([(w1 * w1.grad).abs().sum(1), (w2 * w2.grad).abs().sum(0)]).mean(0)
    sn.set_choices({"0": 1})
    sn.train()
    sentinel = torch.full_like(sn.graph_module.get_submodule("0").weight, 7.0)
    sn.graph_module.get_submodule("0").weight.grad = sentinel
    got = importance(sn, "taylor", loader=[(x, y)])
    torch.testing.assert_close(got["0"], want.detach())
    assert sn.choices() == {"0": 1} and all(m.training for m in sn.modules())
    assert sn.graph_module.get_submodule("0").weight.grad is sentinel
    assert sn.graph_module.get_submodule("2").weight.grad is None
    reference.zero_grad()
    reference(x).square().sum().backward()
    want = torch.stack([(w1 * w1.grad).abs().sum(1), (w2 * w2.grad).abs().sum(0)]).mean(0)
    squared = importance(sn, "taylor", loader=[x], loss_fn=lambda out: out.square().sum())
    torch.testing.assert_close(squared["0"], want.detach())
    assert squared["0"][2] == 0  # relu(h_2) is 0 on both samples: no gradient reaches it


def test_calibration_leaves_batch_norm_statistics_hooks_and_mode_alone_even_on_failure() -> None:
    _, sn, x = _net()
    sn.train()
    bn = sn.graph_module.get_submodule("1")
    stats = bn.running_mean.clone(), bn.running_var.clone()

    def failing():
        yield x
        raise RuntimeError("broken batch")

    with pytest.raises(RuntimeError, match="broken batch"):
        importance(sn, "activation", loader=failing())
    importance(sn, "wanda", loader=[x])
    torch.testing.assert_close((bn.running_mean, bn.running_var), stats)
    assert all(m.training for m in sn.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in sn.modules())
    with torch.no_grad():
        torch.testing.assert_close(sn(x)[:, :, 0, 0].shape, torch.Size([2, 2]))


@pytest.mark.parametrize(("options", "message"), [
    ({"criterion": "activation"}, "exactly one of forward_loop"),
    ({"criterion": "wanda", "loader": [], "forward_loop": print}, "exactly one of"),
    ({"criterion": "activation", "loader": []}, "loader yielded no batch"),
    ({"criterion": "wanda", "forward_loop": lambda m: None}, "forward_loop ran no batch"),
    ({"criterion": "l1", "loader": [torch.ones(1, 2)]}, "reads the weights only"),
    ({"criterion": "wanda", "members": ("out",)}, "leave members out"),
    ({"criterion": "l1", "members": ("rows",)}, "members is a non-empty"),
    ({"criterion": "taylor", "loader": [torch.ones(1, 2)]}, "needs loss_fn"),
    ({"criterion": "activation", "loader": [torch.ones(1, 2)], "loss_fn": print}, "loss_fn"),
])
def test_bad_calibration_arguments_say_what_to_pass(options: dict, message: str) -> None:
    _, sn, _ = _mlp()
    with pytest.raises(InvalidArgumentError, match=message):
        importance(sn, **options)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in sn.modules())
