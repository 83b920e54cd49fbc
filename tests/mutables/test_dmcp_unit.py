"""DMCP: the unit's Markov chain, DMCPBatchNorm2d, sampling modes and expected FLOPs.

Every expected number is computed here by hand (sigmoids with ``math.exp``, products,
sums), never by the code under test.
"""

from __future__ import annotations

import copy
import math
import random
from collections import Counter

import pytest
import torch
from oracles import assert_close
from torch import nn

import fxrazor
from fxrazor.errors import FxRazorError, InvalidArgumentError, InvalidChoiceError
from fxrazor.mutables.dmcp_flops import current_flops, expected_flops
from fxrazor.mutables.dmcp_unit import DMCPChannelUnit, arch_groups
from fxrazor.ops.dmcp_norm import DMCPBatchNorm2d

CFG = (0.25, 1.0, 0.25)  # 8 channels: 2 kept + 3 groups of 2; 12 channels: 3 + 3 x 3
ALPHA_A = [0.3, -1.2, 2.0]
ALPHA_B = [1.0, 0.5, -0.4]


def sig(a: float) -> float:
    return 1.0 / (1.0 + math.exp(-a))


def marginals(alphas: list[float]) -> list[float]:
    out, p = [], 1.0
    for a in alphas:
        p *= sig(a)
        out.append(p)
    return out


def two_conv_net() -> tuple[nn.Module, torch.Tensor]:
    """conv(3->8, 3x3)-bn-relu-conv(8->4, 1x1): one unit '0' of 8 channels."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 4, 1))
    return model.eval(), torch.randn(1, 3, 6, 6)


def three_conv_net() -> tuple[nn.Module, torch.Tensor]:
    """conv(3->8, 3x3)-bn-relu-conv(8->12, 1x1)-bn-relu-conv(12->4, 1x1): units '0' (8)
    and '3' (12)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 12, 1), nn.BatchNorm2d(12), nn.ReLU(),
                          nn.Conv2d(12, 4, 1))
    return model.eval(), torch.randn(1, 3, 6, 6)


def dmcp(model: nn.Module, x: torch.Tensor, **unit_args):
    sn = fxrazor.convert(model, x, unit="dmcp", unit_args={"pruning_cfg": CFG, **unit_args})
    for unit, alphas in zip(sn.units, (ALPHA_A, ALPHA_B), strict=False):
        with torch.no_grad():
            unit.arch_param.copy_(torch.tensor(alphas))
    return sn


# ---- the chain -------------------------------------------------------------------------------
def test_groups_follow_the_pruning_cfg() -> None:
    assert arch_groups(64, (0.1, 1.0, 0.05)) == (3, 18, 64 - 54)  # MMRazor's default cfg
    assert arch_groups(8, CFG) == (2, 3, 2)
    assert arch_groups(12, CFG) == (3, 3, 3)
    assert arch_groups(3, CFG) == (0, 0, 3)  # no whole channel per group: nothing to learn
    unit = DMCPChannelUnit(3, pruning_cfg=CFG)
    assert unit.arch_params() == [] and unit.expected_channels().item() == 3


def test_marginals_keep_probs_and_expected_channels_by_hand() -> None:
    sn = dmcp(*two_conv_net())
    unit = sn.unit("0")
    m = marginals(ALPHA_A)
    assert_close(unit.transition_probs(), torch.tensor([sig(a) for a in ALPHA_A]))
    assert_close(unit.marginal_probs(), torch.tensor(m))
    assert_close(unit.channel_keep_probs(),
                 torch.tensor([1.0, 1.0, m[0], m[0], m[1], m[1], m[2], m[2]]))
    assert_close(unit.expected_channels(), torch.tensor(2 + 2 * sum(m)))
    unit.sample_subnet("expected")
    assert unit.current_choice == 8 and unit.arch_train
    tensor_channels = unit.mutable_channel.activated_tensor_channels
    assert tensor_channels.requires_grad
    assert_close(tensor_channels, torch.tensor(2 + 2 * sum(m)))
    unit.current_choice = 4  # a width set by hand: a plain count again
    assert unit.sample_mode is None
    assert unit.mutable_channel.activated_tensor_channels.item() == 4.0


def test_exp_transition_is_mmrazors() -> None:
    unit = DMCPChannelUnit(8, pruning_cfg=CFG, transition="exp")
    with torch.no_grad():
        unit.arch_param.copy_(torch.tensor([-1.0, 0.5, 2.0]))
    p = [1.0, math.exp(-0.5), math.exp(-2.0)]  # exp(-max(a, 0))
    assert_close(unit.marginal_probs(), torch.tensor([p[0], p[0] * p[1], p[0] * p[1] * p[2]]))


# ---- DMCPBatchNorm2d ----------------------------------------------------------------------
def test_convert_puts_in_dmcp_batchnorms_and_full_width_is_the_model() -> None:
    model, x = three_conv_net()
    sn = dmcp(model, x)
    bns = [m for m in sn.graph_module.modules() if isinstance(m, DMCPBatchNorm2d)]
    assert [m.arch_sources for m in bns] == [[sn.unit("0")], [sn.unit("3")]]
    names = {n for n, _ in sn.named_parameters()}
    assert {"all_units.0.arch_param", "all_units.1.arch_param"} <= names
    for unit in sn.units:
        unit.sample_subnet("max")
        assert not unit.arch_train
    with torch.no_grad():
        assert_close(sn(x), model(x))


def test_expected_mode_scales_each_channel_by_its_keep_probability() -> None:
    model, x = two_conv_net()
    sn = dmcp(model, x)
    sn.unit("0").sample_subnet("expected")
    bn = sn.graph_module.get_submodule("1")
    h = torch.randn(2, 8, 3, 3)
    m = marginals(ALPHA_A)
    probs = torch.tensor([1.0, 1.0, m[0], m[0], m[1], m[1], m[2], m[2]])
    with torch.no_grad():
        assert_close(bn(h), model[1](h) * probs.view(1, 8, 1, 1))
        # and the whole net: the second conv sees the scaled activations
        assert_close(sn(x), model[3](model[2](model[1](model[0](x)) * probs.view(1, 8, 1, 1))))


def test_a_batchnorm_over_two_units_scales_each_part_by_its_own_unit() -> None:
    class Cat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 12, 1)
            self.bn, self.head = nn.BatchNorm2d(20), nn.Conv2d(20, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.bn(torch.cat([self.a(x), self.b(x)], 1)))

    torch.manual_seed(0)
    model, x = Cat().eval(), torch.randn(1, 3, 4, 4)
    sn = fxrazor.convert(model, x, unit="dmcp", unit_args={"pruning_cfg": CFG})
    ua, ub = sn.unit("a"), sn.unit("b")
    with torch.no_grad():
        ua.arch_param.copy_(torch.tensor(ALPHA_A))
        ub.arch_param.copy_(torch.tensor(ALPHA_B))
    ua.sample_subnet("expected")
    ub.sample_subnet("max", arch_train=False)  # only unit a scales
    ma = marginals(ALPHA_A)
    probs = torch.tensor([1, 1, ma[0], ma[0], ma[1], ma[1], ma[2], ma[2]] + [1.0] * 12)
    h = torch.randn(1, 20, 2, 2)
    with torch.no_grad():
        assert_close(sn.graph_module.bn(h), model.bn(h) * probs.view(1, 20, 1, 1))
    ub.sample_subnet("expected")
    mb = marginals(ALPHA_B)
    probs[8:] = torch.tensor([1.0] * 3 + [mb[0]] * 3 + [mb[1]] * 3 + [mb[2]] * 3)
    with torch.no_grad():
        assert_close(sn.graph_module.bn(h), model.bn(h) * probs.view(1, 20, 1, 1))


def test_arch_params_get_gradients_from_the_task_loss_in_expected_mode_only() -> None:
    sn = dmcp(*three_conv_net())
    x = torch.randn(2, 3, 6, 6)
    for unit in sn.units:
        unit.sample_subnet("max")
    sn(x).square().sum().backward()
    assert all(u.arch_param.grad is None for u in sn.units)
    for unit in sn.units:
        unit.sample_subnet("expected")
    sn(x).square().sum().backward()
    for unit in sn.units:
        assert unit.arch_param.grad is not None and bool((unit.arch_param.grad != 0).all())


def test_frozen_equals_supernet_at_sampled_widths_and_drops_the_arch_params() -> None:
    model, x = three_conv_net()
    sn = dmcp(model, x)
    random.seed(3)
    for mode in ("min", "random", "direct", "max"):
        for unit in sn.units:
            unit.sample_subnet(mode)
        frozen = fxrazor.freeze(sn)
        with torch.no_grad():
            assert_close(frozen(x), sn(x))
        assert not any(isinstance(m, DMCPBatchNorm2d) for m in frozen.modules())
        assert not any("_dmcp_sources" in vars(m) for m in frozen.modules())
        assert "arch_param" not in str([n for n, _ in frozen.named_parameters()])
    assert copy.deepcopy(sn).graph_module.get_submodule("1").arch_sources[0] is not sn.unit("0")


# ---- sampling modes ------------------------------------------------------------------------
def test_min_max_random_give_the_grid_widths() -> None:
    sn = dmcp(*three_conv_net())
    unit = sn.unit("3")  # 12 channels: 3 kept + 3 groups of 3
    unit.sample_subnet("min")
    assert unit.activated_channels == 3 and sn.sample_choices("min")["3"] == 3
    unit.sample_subnet("max")
    assert unit.activated_channels == 12
    random.seed(0)
    seen = set()
    for _ in range(200):
        unit.sample_subnet("random")
        seen.add(unit.activated_channels)
        assert not unit.arch_train
    assert seen == {3, 6, 9, 12}
    ratio = DMCPChannelUnit(12, choice_mode="ratio", pruning_cfg=CFG)
    ratio.sample_subnet("min")
    assert ratio.current_choice == 0.25 and ratio.activated_channels == 3


def test_direct_samples_follow_the_chain() -> None:
    unit = DMCPChannelUnit(8, pruning_cfg=CFG)
    with torch.no_grad():
        unit.arch_param.copy_(torch.tensor(ALPHA_A))
    s = [sig(a) for a in ALPHA_A]
    # P(exactly j groups) = s_1 ... s_j (1 - s_{j+1}); the last has no next transition
    expected = {2: 1 - s[0], 4: s[0] * (1 - s[1]), 6: s[0] * s[1] * (1 - s[2]),
                8: s[0] * s[1] * s[2]}
    random.seed(0)
    n = 4000
    counts = Counter()
    for _ in range(n):
        unit.sample_subnet("direct")
        counts[unit.activated_channels] += 1
    assert set(counts) <= set(expected)
    for width, p in expected.items():
        assert abs(counts[width] / n - p) < 0.03, (width, counts[width] / n, p)


# ---- expected FLOPs ------------------------------------------------------------------------
def test_expected_flops_by_hand_and_their_gradient() -> None:
    sn = dmcp(*three_conv_net())
    ma, mb = marginals(ALPHA_A), marginals(ALPHA_B)
    ea, eb = 2 + 2 * sum(ma), 3 + 3 * sum(mb)
    hw = 6 * 6
    # conv 3x3 (3 -> a), conv 1x1 (a -> b), conv 1x1 (b -> 4), units independent
    want = 3 * ea * 9 * hw + ea * eb * hw + eb * 4 * hw
    flops = expected_flops(sn)
    assert flops.item() == pytest.approx(want, rel=1e-5)
    flops.backward()
    # d flops / d alpha_1 of unit a: (3 * 9 * hw + eb * hw) * 2 * d(sum m)/d alpha_1, and
    # d m_j / d alpha_1 = m_j * (1 - s_1) for every j
    d_ea = 2 * sum(ma) * (1 - sig(ALPHA_A[0]))
    grad = sn.unit("0").arch_param.grad
    assert grad is not None
    assert grad[0].item() == pytest.approx((3 * 9 * hw + eb * hw) * d_ea, rel=1e-4)
    assert bool((sn.unit("3").arch_param.grad > 0).all())  # more width, more FLOPs


def test_current_flops_are_the_frozen_subnets() -> None:
    model, x = three_conv_net()
    sn = dmcp(model, x)
    sn.set_choices({"0": 4, "3": 9})
    frozen = fxrazor.freeze(sn)
    want = sum(m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1] * 36
               for m in frozen.modules() if isinstance(m, nn.Conv2d))
    assert want == 3 * 4 * 9 * 36 + 4 * 9 * 36 + 9 * 4 * 36
    assert current_flops(sn) == pytest.approx(want)


def test_depthwise_and_linear_flops() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8),
                          nn.Flatten(), nn.Linear(8 * 16, 5)).eval()
    sn = dmcp(model, torch.randn(1, 3, 4, 4))
    assert [u.name for u in sn.units] == ["0"]
    e = 2 + 2 * sum(marginals(ALPHA_A))
    # 1x1 conv 3 -> e; depthwise 3x3: e * 9; linear: (e channels x 16 pixels) -> 5
    want = 3 * e * 16 + e * 9 * 16 + 16 * e * 5
    assert expected_flops(sn).item() == pytest.approx(want, rel=1e-5)


# ---- bad input ---------------------------------------------------------------------------
def test_bad_input_raises_clear_errors() -> None:
    with pytest.raises(InvalidArgumentError, match="min_rate < max_rate"):
        DMCPChannelUnit(8, pruning_cfg=(0.5, 0.4, 0.1))
    with pytest.raises(InvalidArgumentError, match=r"\(min_rate, max_rate, rate_offset\)"):
        DMCPChannelUnit(8, pruning_cfg=(0.1, 1.0))
    with pytest.raises(InvalidArgumentError, match="raise min_rate"):
        DMCPChannelUnit(40, pruning_cfg=(0.0, 1.0, 0.05))  # 20 groups of 2 leave nothing
    with pytest.raises(InvalidChoiceError, match="transition"):
        DMCPChannelUnit(8, transition="softmax")
    with pytest.raises(InvalidChoiceError, match="positive int"):
        DMCPChannelUnit(0)
    unit = DMCPChannelUnit(8, pruning_cfg=CFG)
    with pytest.raises(InvalidChoiceError, match="sample mode must be one of"):
        unit.sample_subnet("expectation")
    with pytest.raises(InvalidArgumentError, match="arch_train"):
        unit.sample_subnet("max", arch_train=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="needs a Supernet"):
        unit.prepare_for_pruning(nn.Linear(2, 2))
    with pytest.raises(InvalidArgumentError, match="Supernet"):
        expected_flops(nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="takes a BatchNorm2d"):
        DMCPBatchNorm2d.from_static(nn.Linear(2, 2))
    bn = DMCPBatchNorm2d.from_static(nn.BatchNorm2d(4))
    with pytest.raises(InvalidArgumentError, match=r"in \[0, 4\)"):
        bn.add_arch_source(unit, [[0], [4]])
    four = DMCPChannelUnit(4, pruning_cfg=CFG)
    bn.add_arch_source(four, [[0], [1], [2], [3]])
    with pytest.raises(InvalidArgumentError, match="already attached"):
        bn.add_arch_source(four, [[0], [1], [2], [3]])
    assert issubclass(InvalidArgumentError, FxRazorError)
