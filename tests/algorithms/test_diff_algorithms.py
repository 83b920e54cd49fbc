"""DARTS, DSNAS, DCFF and DMCP on tiny models: each gradient and loss against a hand
computation (plain torch ops on the same numbers, never the code under test), which
parameters each step moves, seeded sampling, and refusals before any weight changes."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fxrazor.algorithms import DARTS, DCFF, DMCP, DSNAS
from fxrazor.errors import InvalidArgumentError
from fxrazor.mutables import DiffMutableOP, OneHotMutableOP
from fxrazor.mutables.dmcp_flops import expected_flops

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


def weights_of(algo) -> list[torch.Tensor]:
    return [p.detach().clone() for p in algo.supernet.model_params()]


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def unchanged(module: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in module.state_dict().items())


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


def _refused(algo, call) -> None:
    before = snapshot(algo)
    with pytest.raises(InvalidArgumentError):
        call()
    assert unchanged(algo, before)


def test_darts_refuses_bad_input_before_any_change() -> None:
    algo, _ = darts()
    train, val = batches()
    opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.5)
    arch_opt = torch.optim.SGD(algo.arch_parameters(), lr=0.5)
    _refused(algo, lambda: algo.train_step(train, opt, val_batch=val))
    _refused(algo, lambda: algo.train_step(train, opt, arch_optimizer=arch_opt))
    weights_only = torch.optim.SGD(algo.supernet.model_params(), lr=0.5)
    _refused(algo, lambda: algo.train_step(train, opt, val_batch=val,
                                           arch_optimizer=weights_only))
    both = torch.optim.SGD(algo.parameters(), lr=0.5)
    _refused(algo, lambda: algo.train_step(train, both, val_batch=val, arch_optimizer=arch_opt))
    wrong = (torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1]))
    _refused(algo, lambda: algo.train_step(wrong, opt, val_batch=val, arch_optimizer=arch_opt))
    _refused(algo, lambda: algo.train_step(train, opt, val_batch=wrong, arch_optimizer=arch_opt))
    other = torch.optim.SGD(Cell().parameters(), lr=0.5)
    _refused(algo, lambda: algo.train_step(train, other, val_batch=val, arch_optimizer=arch_opt))
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
    _refused(algo, lambda: algo.train_step(dsnas_batch(), weights_only))
    _refused(algo, lambda: algo.train_step((torch.randn(5, 3), torch.zeros(5, dtype=torch.long)),
                                           torch.optim.SGD(algo.parameters(), lr=0.5)))
    _refused(algo, lambda: algo.train_step(dsnas_batch(), torch.optim.SGD(algo.parameters()),
                                           arch_optimizer=torch.optim.SGD(
                                               algo.arch_parameters())))
    with pytest.raises(InvalidArgumentError, match="OneHotMutableOP"):
        DSNAS(nn.Linear(2, 2), torch.randn(1, 2))


# ---- DCFF ------------------------------------------------------------------------------------
def conv_net(width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def conv_batch(seed: int = 0, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 6, 6, generator=g), torch.arange(n) % 3


def hand_temperature(e: float, big_e: float) -> float:
    a = 2 * (10000 - 1) * (1 + math.exp(-big_e)) / (1 - math.exp(-big_e))
    return 1 / (a / (1 + math.exp(-e)) + 1 - a / 2)


def test_dcff_schedule_fusion_and_export() -> None:
    model = conv_net()
    user = snapshot(model)
    algo = DCFF(model, torch.randn(1, 3, 6, 6), total_steps=8, step_freq=2, target_ratio=0.5)
    opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.05)
    fuse = algo.supernet.graph_module.get_submodule("0")
    w0 = weights_of(algo)
    seen = []
    for step in range(6):
        losses = algo.train_step(conv_batch(step), opt)
        assert math.isfinite(losses["loss"])
        seen.append(fuse.temperature)
    # updates at steps 0, 2, 4: progress 0, 1, 2 of 4 updates
    taus = [hand_temperature(u, 4) for u in (0, 1, 2)]
    assert seen == pytest.approx([taus[0], taus[0], taus[1], taus[1], taus[2], taus[2]])
    assert algo.schedule(1) is None and algo.schedule(100) == pytest.approx(1e-4)
    assert any(not torch.equal(a, b) for a, b in zip(weights_of(algo), w0, strict=True))
    frozen = algo.export()
    assert frozen.get_submodule("0").out_channels == 4
    assert algo.last_subnets == [{"0": 0.5}]
    algo.eval()
    x = conv_batch(9)[0]
    torch.testing.assert_close(frozen.eval()(x), algo(x), rtol=1e-5, atol=1e-6)
    assert unchanged(model, user)


def test_dcff_refuses_bad_options() -> None:
    with pytest.raises(InvalidArgumentError, match="total_steps"):
        DCFF(conv_net(), torch.randn(1, 3, 6, 6), total_steps=0)
    with pytest.raises(InvalidArgumentError, match="disagree"):
        DCFF(conv_net(), torch.randn(1, 3, 6, 6), total_steps=2, target_ratio=0.5,
             unit_args={"candidate_choices": [0.25]})


# ---- DMCP ------------------------------------------------------------------------------------
CFG = (0.25, 1.0, 0.25)  # 8 channels: 2 always kept, 3 groups of 2


def dmcp(target: float, alphas=(0.3, -1.2, 2.0), **kwargs) -> tuple[DMCP, nn.Module]:
    model = conv_net()
    algo = DMCP(model, torch.randn(1, 3, 6, 6), target_flops=target,
                unit_args={"pruning_cfg": CFG}, **kwargs)
    with torch.no_grad():
        algo.arch_parameters()[0].copy_(torch.tensor(alphas))
    return algo, model


def expected_ratio_by_hand(alphas) -> float:
    p, total = 1.0, 0.0
    for a in alphas:
        p *= 1 / (1 + math.exp(-a))
        total += p
    channels = 2 + 2 * total
    # conv(3->c, 3x3) and conv(c->3, 1x1) on 6x6: (3*9 + 3) * 36 MACs per channel
    return channels * 30 * 36 / (8 * 30 * 36)


@pytest.mark.parametrize("kind,target", [("log_l1", 0.9), ("log_l1", 0.5), ("log_l1", 0.45),
                                         ("l1", 0.5), ("l2", 0.5)])
def test_dmcp_flops_loss_by_hand(kind: str, target: float) -> None:
    algo, _ = dmcp(target, flops_loss_type=kind, flops_loss_weight=2.0)
    e = expected_ratio_by_hand((0.3, -1.2, 2.0))
    assert float(expected_flops(algo.supernet)) / algo.full_flops == pytest.approx(e)
    assert algo.full_flops == 8 * 30 * 36
    if kind == "l1":
        hand = abs(e - target)
    elif kind == "l2":
        hand = (e - target) ** 2
    elif e < 0.95 * target:
        hand = math.log(target - e)
    elif e <= target:
        hand = 0.0
    else:
        hand = math.log(e - 0.95 * target)
    assert float(algo.flops_loss()) == pytest.approx(2.0 * hand, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("target,alphas", [(0.4, (4.0, 4.0, 4.0)), (0.9, (-3.0, -3.0, -3.0))])
def test_dmcp_flops_loss_pushes_into_the_target_band(target: float, alphas) -> None:
    algo, _ = dmcp(target, alphas=alphas, flops_loss_weight=1.0)
    opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.01)
    arch_opt = torch.optim.Adam(algo.arch_parameters(), lr=0.2)
    start = float(expected_flops(algo.supernet)) / algo.full_flops
    for step in range(40):
        losses = algo.train_step(conv_batch(step), opt, arch_optimizer=arch_opt)
        assert all(math.isfinite(v) for v in losses.values())
    end = float(expected_flops(algo.supernet)) / algo.full_flops
    assert abs(end - target) < abs(start - target)
    assert 0.9 * target <= end <= 1.05 * target


def test_dmcp_arch_params_move_only_by_the_arch_optimizer() -> None:
    algo, model = dmcp(0.5, arch_start_step=2)
    user = snapshot(model)
    alpha0, w0 = algo.arch_parameters()[0].detach().clone(), weights_of(algo)
    opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.1)
    arch_opt = torch.optim.SGD(algo.arch_parameters(), lr=0.5)
    for step in range(2):  # before the architecture trains
        algo.train_step(conv_batch(step), opt, arch_optimizer=arch_opt)
    assert torch.equal(algo.arch_parameters()[0].detach(), alpha0)
    assert algo.arch_parameters()[0].grad is None  # the weights' passes leave no arch grad
    assert any(not torch.equal(a, b) for a, b in zip(weights_of(algo), w0, strict=True))
    w1 = weights_of(algo)
    frozen_opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.0)
    losses = algo.train_step(conv_batch(5), frozen_opt, arch_optimizer=arch_opt)
    assert {"arch_loss", "flops_loss"} <= losses.keys()
    assert not torch.equal(algo.arch_parameters()[0].detach(), alpha0)
    assert all(torch.equal(a, b) for a, b in zip(weights_of(algo), w1, strict=True))
    assert unchanged(model, user)


def test_dmcp_sampling_follows_seed_and_step_and_export_expected() -> None:
    def run(seed: int) -> list:
        algo, _ = dmcp(0.5, seed=seed)
        opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.05)
        arch_opt = torch.optim.SGD(algo.arch_parameters(), lr=0.05)
        seq = []
        for step in range(4):
            algo.train_step(conv_batch(step), opt, arch_optimizer=arch_opt)
            seq.append(algo.last_subnets)
        return seq

    first = run(0)
    assert first == run(0)
    assert [s["0"] for s in first[0][:2]] == [8, 2]  # max, min
    algo, _ = dmcp(0.5)
    marg = [1 / (1 + math.exp(-a)) for a in (0.3, -1.2, 2.0)]
    expected_groups = round(marg[0] + marg[0] * marg[1] + marg[0] * marg[1] * marg[2])
    frozen = algo.export()
    assert frozen.get_submodule("0").out_channels == 2 + 2 * expected_groups
    assert algo.subnet_flops() == (2 + 2 * expected_groups) * 30 * 36


def test_dmcp_refuses_bad_input_before_any_change() -> None:
    algo, _ = dmcp(0.5)
    opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.5)
    arch_opt = torch.optim.SGD(algo.arch_parameters(), lr=0.5)
    _refused(algo, lambda: algo.train_step(conv_batch(), opt))
    _refused(algo, lambda: algo.train_step(conv_batch(), torch.optim.SGD(algo.parameters()),
                                           arch_optimizer=arch_opt))
    _refused(algo, lambda: algo.train_step((torch.randn(4, 3, 5, 5), torch.zeros(4).long()),
                                           opt, arch_optimizer=arch_opt))
    with pytest.raises(InvalidArgumentError, match="outside"):
        dmcp(0.1)  # below the narrowest subnet's FLOPs
    twin = copy.deepcopy(algo)
    assert twin.step_count == 0
