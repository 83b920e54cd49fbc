"""DCFF and DMCP on tiny conv nets: the temperature schedule and DMCP's FLOPs losses
against hand computations, which parameters each step moves, seeded sampling, export at
the target widths, refusals before any change."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from algo_checks import refused, snapshot, unchanged, weights_of
from torch import nn

from fxrazor.algorithms import DCFF, DMCP
from fxrazor.errors import InvalidArgumentError
from fxrazor.mutables.dmcp_flops import expected_flops

torch.set_num_threads(1)


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
    assert float(expected_flops(algo.supernet).detach()) / algo.full_flops == pytest.approx(e)
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
    assert float(algo.flops_loss().detach()) == pytest.approx(2.0 * hand, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("target,alphas", [(0.4, (4.0, 4.0, 4.0)), (0.9, (-3.0, -3.0, -3.0))])
def test_dmcp_flops_loss_pushes_into_the_target_band(target: float, alphas) -> None:
    algo, _ = dmcp(target, alphas=alphas, flops_loss_weight=1.0)
    opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.01)
    arch_opt = torch.optim.Adam(algo.arch_parameters(), lr=0.2)
    start = float(expected_flops(algo.supernet).detach()) / algo.full_flops
    for step in range(40):
        losses = algo.train_step(conv_batch(step), opt, arch_optimizer=arch_opt)
        assert all(math.isfinite(v) for v in losses.values())
    end = float(expected_flops(algo.supernet).detach()) / algo.full_flops
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
    refused(algo, lambda: algo.train_step(conv_batch(), opt))
    refused(algo, lambda: algo.train_step(conv_batch(), torch.optim.SGD(algo.parameters()),
                                           arch_optimizer=arch_opt))
    refused(algo, lambda: algo.train_step((torch.randn(4, 3, 5, 5), torch.zeros(4).long()),
                                           opt, arch_optimizer=arch_opt))
    with pytest.raises(InvalidArgumentError, match="outside"):
        dmcp(0.1)  # below the narrowest subnet's FLOPs
    twin = copy.deepcopy(algo)
    assert twin.step_count == 0
