"""DCFF: the fusing conv, the unit's selection rule and the temperature schedule, each
against the paper's formulas worked out by hand here (plain Python loops over tiny convs);
frozen == supernet, full width == original, gradients reach every filter."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from oracles import assert_close
from torch import nn

import fxrazor
from fxrazor.errors import FxRazorError, InvalidArgumentError, InvalidChoiceError
from fxrazor.mutables.dcff_unit import (
    DCFFChannelUnit,
    calc_information,
    dcff_temperature,
    temperature_from_runtime,
)
from fxrazor.ops.conv import DynamicConv2d
from fxrazor.ops.fuse_conv import FuseConv2d
from fxrazor.ops.norm import DynamicBatchNorm2d
from fxrazor.utils.runtime_info import RuntimeInfo

# Four 2x1x1 filters: f0 and f1 close together, f2 and f3 far from them and each other.
FILTERS = [[0.0, 0.0], [0.5, 0.0], [1.0, 2.0], [-2.0, 1.0]]
BIASES = [0.1, -0.2, 0.3, 0.4]


@pytest.fixture(autouse=True)
def _no_progress() -> Iterator[None]:
    RuntimeInfo.reset()
    yield
    RuntimeInfo.reset()


# ---- the paper's formulas, by hand ---------------------------------------------------------
def hand_p(filters: list[list[float]], tau: float) -> list[list[float]]:
    """p_ij = exp(-||f_i - f_j|| / tau) / sum_k exp(-||f_i - f_k|| / tau)."""
    rows = []
    for fi in filters:
        e = [math.exp(-math.sqrt(sum((a - b) ** 2 for a, b in zip(fi, fj, strict=True))) / tau)
             for fj in filters]
        rows.append([v / sum(e) for v in e])
    return rows


def hand_importance(p: list[list[float]]) -> list[float]:
    """I_i = sum_j KL(p_i || p_j) = sum_j sum_k p_ik log(p_ik / p_jk)."""
    c = len(p)
    return [sum(p[i][k] * math.log(p[i][k] / p[j][k]) for j in range(c) for k in range(c))
            for i in range(c)]


def hand_top(scores: list[float], k: int) -> list[int]:
    return sorted(sorted(range(len(scores)), key=lambda i: -scores[i])[:k])


def hand_fuse(p: list[list[float]], rows: list[int], values: list[list[float]]) -> torch.Tensor:
    """F^_i = sum_j p_ij F_j for each kept i."""
    return torch.tensor([[sum(p[i][j] * values[j][d] for j in range(len(p)))
                          for d in range(len(values[0]))] for i in rows])


def hand_temperature(e: float, big_e: float) -> float:
    t_s, t_e = 1.0, 10000.0  # k = 1
    a = 2 * (t_e - t_s) * (1 + math.exp(-big_e)) / (1 - math.exp(-big_e))
    return 1 / (a / (1 + math.exp(-e)) + t_s - a / 2)


def tiny_model() -> tuple[nn.Module, torch.Tensor]:
    """conv(2->4, 1x1, the filters above)-relu-conv(4->3, 1x1): one unit, ``'0'``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 1), nn.ReLU(), nn.Conv2d(4, 3, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(FILTERS).view(4, 2, 1, 1))
        model[0].bias.copy_(torch.tensor(BIASES))
    return model.eval(), torch.randn(2, 2, 3, 3)


def dcff(model: nn.Module, x: torch.Tensor, width: float = 0.5) -> fxrazor.Supernet:
    return fxrazor.convert(model, x, unit="dcff", unit_args={"candidate_choices": [width]})


# ---- fusion and selection against the hand formulas ----------------------------------------
def test_fused_filters_and_kept_channels_follow_the_paper_by_hand() -> None:
    model, x = tiny_model()
    sn = dcff(model, x)
    assert calc_information(sn, tau=2.0) == 2.0
    p = hand_p(FILTERS, 2.0)
    scores = hand_importance(p)
    kept = hand_top(scores, 2)
    assert kept == [2, 3]  # the two outlying filters, not the first two
    unit = sn.unit("0")
    assert_close(unit.importance, torch.tensor(scores), rtol=1e-5, atol=1e-6)
    assert torch.nonzero(unit.current_mask).flatten().tolist() == kept

    conv = sn.graph_module.get_submodule("0")
    assert isinstance(conv, FuseConv2d) and conv.temperature == 2.0
    assert_close(conv.fusion, torch.tensor(p), rtol=1e-6, atol=1e-7)
    weight, bias = hand_fuse(p, kept, FILTERS), hand_fuse(p, kept, [[b] for b in BIASES])[:, 0]
    hidden = F.relu(F.conv2d(x, weight.view(2, 2, 1, 1), bias))
    expected = F.conv2d(hidden, model[2].weight[:, kept], model[2].bias)
    assert_close(sn(x), expected, rtol=1e-5, atol=1e-6)

    frozen = fxrazor.freeze(sn)
    static = frozen.get_submodule("0")
    assert type(static) is nn.Conv2d and set(static.state_dict()) == {"weight", "bias"}
    assert list(static.buffers()) == [] and "temperature" not in vars(static)
    assert_close(static.weight.view(2, 2), weight, rtol=1e-6, atol=1e-7)
    assert_close(static.bias, bias, rtol=1e-6, atol=1e-7)
    assert_close(frozen(x), sn(x), rtol=1e-6, atol=1e-7)


def test_a_residual_unit_sums_the_importance_of_its_fusing_convs() -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 4, 1), nn.Conv2d(2, 4, 1)
            self.c = nn.Conv2d(4, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(F.relu(self.a(x) + self.b(x)))

    torch.manual_seed(1)
    model = Residual().eval()
    with torch.no_grad():
        model.a.weight.copy_(torch.tensor(FILTERS).view(4, 2, 1, 1))
    x = torch.randn(1, 2, 3, 3)
    sn = dcff(model, x)
    calc_information(sn, tau=1.5)
    (unit,) = sn.units
    filters_b = model.b.weight.detach().view(4, 2).tolist()
    p_a, p_b = hand_p(FILTERS, 1.5), hand_p(filters_b, 1.5)
    scores = [s + t for s, t in zip(hand_importance(p_a), hand_importance(p_b),
                                    strict=True)]
    assert_close(unit.importance, torch.tensor(scores), rtol=1e-5, atol=1e-6)
    kept = hand_top(scores, 2)
    assert torch.nonzero(unit.current_mask).flatten().tolist() == kept
    # both producers fuse at the unit's kept positions, each with its own distributions
    fa = hand_fuse(p_a, kept, FILTERS).view(2, 2, 1, 1)
    fb = hand_fuse(p_b, kept, filters_b).view(2, 2, 1, 1)
    ba = hand_fuse(p_a, kept, [[v] for v in model.a.bias.tolist()])[:, 0]
    bb = hand_fuse(p_b, kept, [[v] for v in model.b.bias.tolist()])[:, 0]
    hidden = F.relu(F.conv2d(x, fa, ba) + F.conv2d(x, fb, bb))
    assert_close(sn(x), F.conv2d(hidden, model.c.weight[:, kept], model.c.bias),
                 rtol=1e-5, atol=1e-6)
    assert_close(fxrazor.freeze(sn)(x), sn(x), rtol=1e-6, atol=1e-7)


def test_only_plain_producing_convs_fuse_others_stay() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
                          nn.Conv2d(8, 6, 1), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.Conv2d(6, 2, 1)).eval()
    with torch.no_grad():  # statistics that differ per channel, so slicing them matters
        for bn in (model[1], model[6]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 6, 6)
    sn = dcff(model, x)
    kinds = {name: type(sn.graph_module.get_submodule(name)) for name in
             ("0", "1", "3", "5", "6", "8")}
    assert kinds == {"0": FuseConv2d, "1": DynamicBatchNorm2d, "3": DynamicConv2d,
                     "5": FuseConv2d, "6": DynamicBatchNorm2d, "8": DynamicConv2d}
    assert [len(u.fusing_convs) for u in sn.units] == [1, 1]
    fused = sn.graph_module.get_submodule("0")
    sn.unit("0").prepare_for_pruning(sn)  # again: the same conv, not a fusion of a fusion
    assert sn.graph_module.get_submodule("0") is fused and sn.unit("0").fusing_convs == [fused]
    calc_information(sn, tau=0.7)
    frozen = fxrazor.freeze(sn)
    assert_close(frozen(x), sn(x), rtol=1e-5, atol=1e-6)
    assert frozen.get_submodule("3").groups == 4  # the depthwise conv kept whole groups


# ---- full width, gradients ---------------------------------------------------------------
def test_full_width_is_the_original_model_exactly() -> None:
    model, x = tiny_model()
    sn = fxrazor.convert(model, x, unit="dcff")  # the default width, 1.0
    assert isinstance(sn.graph_module.get_submodule("0"), FuseConv2d)
    calc_information(sn, tau=0.5)
    assert torch.equal(sn(x), model(x))
    assert torch.equal(fxrazor.freeze(sn)(x), model(x))
    pruned = dcff(model, x)
    calc_information(pruned, tau=0.5)
    with pruned.full_width():  # (the graph module: the supernet's own call re-syncs)
        assert torch.equal(pruned.graph_module(x), model(x))


def test_gradients_reach_every_filter_through_the_fusion() -> None:
    model, x = tiny_model()
    sn = dcff(model, x)
    calc_information(sn, tau=2.0)
    sn(x).square().sum().backward()
    grad = sn.graph_module.get_submodule("0").weight.grad.view(4, 2)
    # by hand: the fused filters as leaves, then dL/dF_j = sum_i p_ij dL/dF^_i
    p, kept = hand_p(FILTERS, 2.0), [2, 3]
    leaf = torch.tensor(FILTERS, requires_grad=True)
    rows = torch.tensor([p[i] for i in kept])
    bias = hand_fuse(p, kept, [[b] for b in BIASES])[:, 0]
    hidden = F.relu(F.conv2d(x, (rows @ leaf).view(2, 2, 1, 1), bias))
    F.conv2d(hidden, model[2].weight[:, kept].detach(), model[2].bias.detach()) \
        .square().sum().backward()
    assert_close(grad, leaf.grad, rtol=1e-5, atol=1e-6)
    assert bool((grad.abs().sum(1) > 0).all())  # the pruned filters 0 and 1 learn too
    # the plain dynamic conv, by contrast, gives the pruned filters no gradient
    plain = fxrazor.convert(model, x, unit="one_shot", unit_args={"candidate_choices": [0.5]})
    plain(x).square().sum().backward()
    assert bool((plain.graph_module.get_submodule("0").weight.grad.view(4, 2)[2:] == 0).all())


# ---- temperature schedule, RuntimeInfo -------------------------------------------------------
@pytest.mark.parametrize(("e", "big_e"), [(0, 10), (1, 10), (3, 10), (9, 10), (10, 10),
                                          (0.5, 1), (50, 100)])
def test_temperature_schedule_by_hand(e: float, big_e: float) -> None:
    assert dcff_temperature(e, big_e) == pytest.approx(hand_temperature(e, big_e), rel=1e-12)


def test_temperature_runs_from_one_to_one_over_t_e() -> None:
    assert dcff_temperature(0, 90) == 1.0
    assert dcff_temperature(90, 90) == pytest.approx(1e-4, rel=1e-12)
    # T = A/(1+e^-1) + 1 - A/2 with A = 2 * 9999 * (1 + e^-10) / (1 - e^-10) ~ 19998.9
    assert 1 / dcff_temperature(1, 10) == pytest.approx(4622.0, rel=1e-3)


def test_the_temperature_comes_from_runtime_info() -> None:
    with RuntimeInfo.scope(epoch=3, max_epochs=10, iter=5, max_iters=100):
        assert temperature_from_runtime() == pytest.approx(hand_temperature(3, 10))
        assert temperature_from_runtime(by_epoch=False) == pytest.approx(hand_temperature(5, 100))
        model, x = tiny_model()
        sn = dcff(model, x)  # convert ranks at the current progress
        assert sn.unit("0").temperature == pytest.approx(hand_temperature(3, 10))
    sn2 = dcff(model, x)  # no progress known: the schedule's start
    assert sn2.unit("0").temperature == 1.0
    with RuntimeInfo.scope(epoch=7, max_epochs=10):
        tau = calc_information(sn2)
    assert tau == pytest.approx(hand_temperature(7, 10))
    assert sn2.graph_module.get_submodule("0").temperature == tau


def test_a_short_training_run_then_freeze() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 4, 1))
    x = torch.randn(4, 3, 6, 6)
    sn = dcff(model, x).train()
    optim = torch.optim.SGD(sn.parameters(), lr=0.05)
    for epoch in range(3):
        RuntimeInfo.set_info(epoch=epoch, max_epochs=3)
        calc_information(sn)
        for _ in range(2):
            optim.zero_grad()
            sn(x).square().mean().backward()
            optim.step()
    sn.eval()
    assert_close(fxrazor.freeze(sn)(x), sn(x), rtol=1e-5, atol=1e-6)
    assert sn.unit("0").temperature == pytest.approx(hand_temperature(2, 3))


def test_a_copied_supernet_updates_its_own_convs() -> None:
    model, x = tiny_model()
    sn = dcff(model, x)
    twin = copy.deepcopy(sn)
    assert twin.unit("0").fusing_convs[0] is twin.graph_module.get_submodule("0")
    calc_information(twin, tau=0.25)
    assert twin.graph_module.get_submodule("0").temperature == 0.25
    assert sn.graph_module.get_submodule("0").temperature == 1.0


# ---- one width, bad input ----------------------------------------------------------------
def test_one_width_fixed_before_training() -> None:
    unit = DCFFChannelUnit(8)
    assert (unit.candidate_choices, unit.choice_mode, unit.current_choice) == ([1.0], "ratio", 1.0)
    assert DCFFChannelUnit(8, [4], choice_mode="number").activated_channels == 4
    for bad in ([0.5, 1.0], []):
        with pytest.raises(InvalidChoiceError, match="one width"):
            DCFFChannelUnit(8, bad)


@pytest.mark.parametrize("tau", [0, -1.0, float("nan"), float("inf"), True, "1"])
def test_invalid_temperatures_are_refused_and_nothing_changes(tau: object) -> None:
    model, x = tiny_model()
    sn = dcff(model, x)
    conv = sn.graph_module.get_submodule("0")
    before = conv.fusion.clone()
    with pytest.raises(InvalidArgumentError, match="temperature must be a finite number > 0"):
        calc_information(sn, tau=tau)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="temperature"):
        conv.update_fusion(tau)
    assert torch.equal(conv.fusion, before) and sn.unit("0").temperature == 1.0


@pytest.mark.parametrize(("args", "match"), [
    ((-1, 10), r"progress must lie in \[0, total\]"), ((11, 10), "progress must lie"),
    ((1, 0), "total > 0"), ((float("nan"), 10), "finite number"), ((True, 10), "finite"),
    ((1, 10, 5.0, 2.0), "t_s <= t_e"), ((1, 10, 1.0, 10.0, 0.0), "k > 0"),
])
def test_progress_outside_the_run_is_refused(args: tuple, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        dcff_temperature(*args)


def test_missing_or_impossible_progress_says_what_to_set() -> None:
    model, x = tiny_model()
    sn = dcff(model, x)
    with pytest.raises(FxRazorError, match=r"no 'epoch'.*set_info\(epoch=...\)"):
        calc_information(sn)
    with RuntimeInfo.scope(epoch=12, max_epochs=10):
        with pytest.raises(InvalidArgumentError, match="progress must lie"):
            calc_information(sn)


def test_fuse_conv2d_takes_only_ungrouped_conv2d() -> None:
    with pytest.raises(InvalidArgumentError, match="groups=2"):
        FuseConv2d.from_static(nn.Conv2d(4, 4, 1, groups=2))
    with pytest.raises(InvalidArgumentError, match="got Linear"):
        FuseConv2d.from_static(nn.Linear(2, 2))
    with pytest.raises(InvalidArgumentError, match="needs the supernet"):
        DCFFChannelUnit(4).prepare_for_pruning(nn.Conv2d(2, 4, 1))
