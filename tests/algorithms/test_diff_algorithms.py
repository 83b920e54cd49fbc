"""DARTS and DSNAS on tiny models: each gradient and loss against a hand
computation (plain torch ops on the same numbers, never the code under test), which
parameters each step moves, seeded sampling, and refusals before any weight changes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from algo_checks import refused, snapshot, unchanged, weights_of
from torch import nn

from fxrazor.algorithms import DARTS, DSNAS
from fxrazor.errors import InvalidArgumentError
from fxrazor.mutables import DiffMutableOP, OneHotMutableOP

torch.set_num_threads(1)


class Cell(nn.Module):
    """fc(2->3) -> op{relu, tanh} -> head(3->2); written out by hand in :func:`cell_out`."""

    def __init__(self, op_type: type = DiffMutableOP) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 3)
        self.op = op_type({"relu": nn.ReLU(), "tanh": nn.Tanh()})
        self.op.set_forward_args(torch.zeros(2, dtype=torch.float64))
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.op(self.fc(x)))


def cell_out(w: list[torch.Tensor], alpha: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    h = x @ w[0].T + w[1]
    p = torch.softmax(alpha, 0)
    return (p[0] * torch.relu(h) + p[1] * torch.tanh(h)) @ w[2].T + w[3]


def batches() -> tuple[tuple, tuple]:
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(6, 2, generator=g, dtype=torch.float64), \
        torch.randn(5, 2, generator=g, dtype=torch.float64)
    return (x, torch.tensor([0, 1, 1, 0, 1, 0])), (v, torch.tensor([1, 1, 0, 0, 1]))


def darts(unrolled: bool = False) -> tuple[DARTS, nn.Module]:
    torch.manual_seed(0)
    model = Cell().double()
    algo = DARTS(model, torch.randn(2, 2, dtype=torch.float64), unrolled=unrolled)
    with torch.no_grad():
        algo.arch_parameters()[0].copy_(torch.tensor([0.3, -0.2], dtype=torch.float64))
    return algo, model


# ---- DARTS -----------------------------------------------------------------------------------
def test_darts_first_order_arch_gradient_is_the_val_loss_gradient_by_hand() -> None:
    algo, model = darts()
    user = snapshot(model)
    (train, val) = batches()
    w0 = weights_of(algo)
    alpha0 = algo.arch_parameters()[0].detach().clone().requires_grad_()
    expected = torch.autograd.grad(F.cross_entropy(cell_out(w0, alpha0, val[0]), val[1]),
                                   alpha0)[0]
    opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.0)  # weights stay: isolate alpha
    arch_opt = torch.optim.SGD(algo.arch_parameters(), lr=1.0)
    losses = algo.train_step(train, opt, val_batch=val, arch_optimizer=arch_opt)
    assert all(math.isfinite(v) for v in losses.values())
    moved = alpha0.detach() - algo.arch_parameters()[0].detach()  # lr 1: the gradient
    torch.testing.assert_close(moved, expected, rtol=1e-10, atol=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(weights_of(algo), w0, strict=True))
    # the weights' gradient is the training loss's alone, at the new alpha
    alpha1 = algo.arch_parameters()[0].detach()
    wg = [w.clone().requires_grad_() for w in w0]
    hand = torch.autograd.grad(F.cross_entropy(cell_out(wg, alpha1, train[0]), train[1]), wg)
    for p, g in zip(algo.supernet.model_params(), hand, strict=True):
        torch.testing.assert_close(p.grad, g)
    assert unchanged(model, user)


def test_darts_weight_step_changes_weights_not_alpha() -> None:
    algo, _ = darts()
    train, val = batches()
    alpha0, w0 = algo.arch_parameters()[0].detach().clone(), weights_of(algo)
    opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.5)
    arch_opt = torch.optim.SGD(algo.arch_parameters(), lr=0.0)
    algo.train_step(train, opt, val_batch=val, arch_optimizer=arch_opt)
    assert torch.equal(algo.arch_parameters()[0].detach(), alpha0)
    assert all(not torch.equal(a, b) for a, b in zip(weights_of(algo), w0, strict=True))
    assert algo.last_subnets == [{"op": "relu"}]  # alpha = (0.3, -0.2): relu leads


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_darts_unrolled_gradient_against_exact_second_order(weight_decay: float) -> None:
    algo, _ = darts(unrolled=True)
    train, val = batches()
    xi = 0.3
    w0 = weights_of(algo)
    alpha0 = algo.arch_parameters()[0].detach().clone().requires_grad_()
    # exact: differentiate L_val(w - xi (grad L_train + wd w), alpha) through the step
    wg = [w.clone().requires_grad_() for w in w0]
    g_train = torch.autograd.grad(F.cross_entropy(cell_out(wg, alpha0, train[0]), train[1]),
                                  wg, create_graph=True)
    w1 = [w - xi * (g + weight_decay * w) for w, g in zip(wg, g_train, strict=True)]
    exact = torch.autograd.grad(F.cross_entropy(cell_out(w1, alpha0, val[0]), val[1]),
                                alpha0)[0]
    first_order = torch.autograd.grad(
        F.cross_entropy(cell_out(w0, alpha0, val[0]), val[1]), alpha0)[0]
    opt = torch.optim.SGD(algo.supernet.model_params(), lr=xi, weight_decay=weight_decay)
    arch_opt = torch.optim.SGD(algo.arch_parameters(), lr=1.0)
    algo.check_step(train, opt, val, arch_opt)
    algo.unrolled_arch_grad(*train, *val, opt)
    got = algo.arch_parameters()[0].grad
    torch.testing.assert_close(got, exact, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(exact, first_order, rtol=1e-3)  # the second order matters
    # the virtual step and the finite differences put the weights back exactly
    assert all(torch.equal(a, b) for a, b in zip(weights_of(algo), w0, strict=True))
    assert all(p.grad is None for p in algo.supernet.model_params())


def test_darts_export_takes_each_ops_argmax() -> None:
    algo, _ = darts()
    with torch.no_grad():
        algo.arch_parameters()[0].copy_(torch.tensor([-1.0, 2.0], dtype=torch.float64))
    frozen = algo.export()
    assert isinstance(frozen.get_submodule("op"), nn.Tanh)
    x = torch.randn(3, 2, dtype=torch.float64)
    w = weights_of(algo)
    torch.testing.assert_close(frozen(x), torch.tanh(x @ w[0].T + w[1]) @ w[2].T + w[3])


def test_darts_refuses_bad_input_before_any_change() -> None:
    algo, _ = darts()
    train, val = batches()
    opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.5)
    arch_opt = torch.optim.SGD(algo.arch_parameters(), lr=0.5)
    refused(algo, lambda: algo.train_step(train, opt, val_batch=val))
    refused(algo, lambda: algo.train_step(train, opt, arch_optimizer=arch_opt))
    weights_only = torch.optim.SGD(algo.supernet.model_params(), lr=0.5)
    refused(algo, lambda: algo.train_step(train, opt, val_batch=val,
                                           arch_optimizer=weights_only))
    both = torch.optim.SGD(algo.parameters(), lr=0.5)
    refused(algo, lambda: algo.train_step(train, both, val_batch=val, arch_optimizer=arch_opt))
    wrong = (torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1]))
    refused(algo, lambda: algo.train_step(wrong, opt, val_batch=val, arch_optimizer=arch_opt))
    refused(algo, lambda: algo.train_step(train, opt, val_batch=wrong, arch_optimizer=arch_opt))
    other = torch.optim.SGD(Cell().parameters(), lr=0.5)
    refused(algo, lambda: algo.train_step(train, other, val_batch=val, arch_optimizer=arch_opt))
    assert algo.step_count == 0
    with pytest.raises(InvalidArgumentError, match="differentiable"):
        DARTS(nn.Linear(2, 2), torch.randn(1, 2))


# ---- DSNAS -----------------------------------------------------------------------------------
class OneHotNet(nn.Module):
    """fc(4->6) -> op{fc: Linear(6, 6), id} -> head(6->3)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.op = OneHotMutableOP({"fc": nn.Linear(6, 6), "id": nn.Identity()})
        self.op.set_forward_args(torch.zeros(2))
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.op(self.fc(x)))


def dsnas(**kwargs) -> tuple[DSNAS, nn.Module]:
    torch.manual_seed(0)
    model = OneHotNet()
    algo = DSNAS(model, torch.randn(2, 4), **kwargs)
    with torch.no_grad():
        algo.arch_parameters()[0].copy_(torch.tensor([0.4, -0.1]))
    return algo, model


def dsnas_batch(seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5, 4, generator=g), torch.tensor([0, 1, 2, 0, 1])


def test_dsnas_flops_table_by_hand() -> None:
    algo, _ = dsnas()
    # FlopCounterMode counts 2 FLOPs per multiply-add, on the example batch of 2
    assert algo.op_flops == {"op": {"fc": 2 * 2 * 6 * 6, "id": 0}}
    assert algo.min_flops == 2 * (2 * 4 * 6 + 2 * 6 * 3)
    assert algo.max_flops == algo.min_flops + 144


def test_dsnas_arch_gradient_and_resource_loss_by_hand() -> None:
    algo, model = dsnas(resource_weight=0.5)
    user = snapshot(model)
    x, y = dsnas_batch()
    alpha0 = algo.arch_parameters()[0].detach().clone()
    w0 = [p.detach().clone() for p in algo.supernet.model_params()]
    opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.0)
    arch_opt = torch.optim.SGD(algo.arch_parameters(), lr=1.0)
    losses = algo.train_step((x, y), opt, arch_optimizer=arch_opt)
    chosen = algo.last_subnets[0]["op"]
    k = ["fc", "id"].index(chosen)
    # the credit dL/dz of the chosen candidate's one-hot weight z (= 1), by hand
    fc_w, fc_b, op_w, op_b, head_w, head_b = w0
    z = torch.ones((), requires_grad=True)
    h = x @ fc_w.T + fc_b
    cand = h @ op_w.T + op_b if chosen == "fc" else h
    loss = F.cross_entropy((z * cand) @ head_w.T + head_b, y)
    credit = torch.autograd.grad(loss, z)[0]
    p = torch.softmax(alpha0, 0)
    d_log_p = torch.eye(2)[k] - p  # d log p_k / d alpha
    extra = {"fc": 144.0, "id": 0.0}[chosen] / algo.max_flops
    resource = 0.5 * math.log(float(p[k])) * extra
    expected = credit * d_log_p + 0.5 * extra * d_log_p
    torch.testing.assert_close(alpha0 - algo.arch_parameters()[0].detach(), expected)
    assert losses["resource_loss"] == pytest.approx(resource, rel=1e-6, abs=1e-9)
    assert losses["arch_loss"] == pytest.approx(math.log(float(p[k])), rel=1e-6)
    assert losses["loss"] == pytest.approx(float(loss.detach()), rel=1e-6)
    assert unchanged(model, user)


def test_dsnas_resource_loss_waits_for_the_constraint() -> None:
    algo, _ = dsnas(resource_weight=0.5, flops_constraint=1e9)
    opt = torch.optim.SGD(algo.parameters(), lr=0.1)
    assert algo.train_step(dsnas_batch(), opt)["resource_loss"] == 0.0


def test_dsnas_sampling_follows_seed_and_step_only() -> None:
    def run(seed: int) -> list[str]:
        algo, _ = dsnas(seed=seed)
        opt = torch.optim.SGD(algo.parameters(), lr=0.05)
        drawn = []
        for i in range(12):
            torch.manual_seed(100 + i)  # the global generator does not matter
            algo.train_step(dsnas_batch(i), opt)
            drawn.append(algo.last_subnets[0]["op"])
        return drawn

    state = torch.random.get_rng_state()
    first = run(3)
    assert first == run(3)
    assert first != run(4) or first != run(5)
    assert len(set(first)) == 2
    torch.random.set_rng_state(state)


def test_dsnas_updates_weights_and_alpha_together_pretraining_weights_only() -> None:
    algo, _ = dsnas(pretrain_steps=1)
    opt = torch.optim.SGD(algo.parameters(), lr=0.1)
    alpha0, w0 = algo.arch_parameters()[0].detach().clone(), weights_of(algo)
    algo.train_step(dsnas_batch(), opt)  # pretraining: alpha stays
    assert torch.equal(algo.arch_parameters()[0].detach(), alpha0)
    assert any(not torch.equal(a, b) for a, b in zip(weights_of(algo), w0, strict=True))
    algo.train_step(dsnas_batch(3), opt)
    assert not torch.equal(algo.arch_parameters()[0].detach(), alpha0)
    frozen = algo.export()
    best = ["fc", "id"][int(algo.arch_parameters()[0].argmax())]
    assert isinstance(frozen.get_submodule("op"), nn.Linear if best == "fc" else nn.Identity)


def test_dsnas_refuses_bad_input_before_any_change() -> None:
    algo, _ = dsnas()
    weights_only = torch.optim.SGD(algo.supernet.model_params(), lr=0.5)
    refused(algo, lambda: algo.train_step(dsnas_batch(), weights_only))
    refused(algo, lambda: algo.train_step((torch.randn(5, 3), torch.zeros(5, dtype=torch.long)),
                                           torch.optim.SGD(algo.parameters(), lr=0.5)))
    refused(algo, lambda: algo.train_step(dsnas_batch(), torch.optim.SGD(algo.parameters()),
                                           arch_optimizer=torch.optim.SGD(
                                               algo.arch_parameters())))
    with pytest.raises(InvalidArgumentError, match="OneHotMutableOP"):
        DSNAS(nn.Linear(2, 2), torch.randn(1, 2))
