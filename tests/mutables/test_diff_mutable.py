"""Tests for the differentiable mutables (fxrazor.mutables.diff_mutable)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
import torch
from nas_ops import Forbidden, Scale, softmax_by_hand
from torch import nn

from fxrazor.errors import (
    FixedMutableError,
    FxRazorError,
    InvalidChoiceError,
    MutableArgumentError,
)
from fxrazor.mutables.base import DumpChosen
from fxrazor.mutables.diff_mutable import (
    DiffMutableModule,
    DiffMutableOP,
    OneHotMutableOP,
)


def make_convs() -> nn.ModuleDict:
    torch.manual_seed(0)
    return nn.ModuleDict(
        {"conv1": nn.Conv2d(3, 3, 1), "conv3": nn.Conv2d(3, 3, 3, padding=1), "id": nn.Identity()}
    )


# --------------------------------------------------------------------------- DiffMutableOP


def test_diff_op_weighted_sum_matches_hand_computation() -> None:
    factors = [1.0, -2.0, 3.0]
    op = DiffMutableOP({f"s{i}": Scale(f) for i, f in enumerate(factors)})
    values = [0.3, -1.2, 0.7]
    arch_param = nn.Parameter(torch.tensor(values))
    x = torch.tensor([1.0, -0.5, 2.0])
    probs = softmax_by_hand(values)
    expected = sum(p * f for p, f in zip(probs, factors, strict=True)) * x
    torch.testing.assert_close(op.forward_arch_param(x, arch_param), expected)
    torch.testing.assert_close(op(x, arch_param), expected)
    # d(sum out)/d a_j = sum(x) * p_j * (f_j - sum_k p_k f_k)
    op(x, arch_param).sum().backward()
    mean_f = sum(p * f for p, f in zip(probs, factors, strict=True))
    expected_grad = [float(x.sum()) * p * (f - mean_f) for p, f in zip(probs, factors, strict=True)]
    torch.testing.assert_close(arch_param.grad, torch.tensor(expected_grad))


def test_diff_op_with_conv_candidates() -> None:
    candidates = make_convs()
    op = DiffMutableOP(candidates)
    x = torch.randn(2, 3, 5, 5)
    arch_param = torch.tensor([0.5, 0.0, -0.5])
    probs = softmax_by_hand([0.5, 0.0, -0.5])
    expected = sum(p * candidates[name](x) for p, name in zip(probs, op.choices, strict=True))
    torch.testing.assert_close(op(x, arch_param), expected)
    plain = candidates["conv1"](x) + candidates["conv3"](x) + x
    torch.testing.assert_close(op.forward_all(x), plain)


def test_compute_arch_probs_is_softmax_over_last_dim() -> None:
    op = DiffMutableOP({"a": nn.Identity(), "b": nn.Identity()})
    rows = [[0.0, 1.0], [2.0, -1.0]]
    probs = op.compute_arch_probs(torch.tensor(rows))
    expected = torch.tensor([softmax_by_hand(r) for r in rows])
    torch.testing.assert_close(probs, expected)


def test_forward_uses_bound_arch_param() -> None:
    op = DiffMutableOP({"a": Scale(1.0), "b": Scale(3.0)})
    x = torch.ones(2)
    # no arch_param and none bound: every candidate, unweighted (forward_all), 1 + 3
    torch.testing.assert_close(op(x), torch.full((2,), 4.0))
    bound = nn.Parameter(torch.tensor([0.0, 0.0]))
    op.set_forward_args(bound)
    torch.testing.assert_close(op(x), torch.full((2,), 2.0))  # 0.5 * 1 + 0.5 * 3
    # An explicit arch_param wins over the bound one.
    explicit = torch.tensor([math.log(3.0), 0.0])  # probs 0.75, 0.25
    torch.testing.assert_close(op(x, explicit), torch.full((2,), 1.5))
    # The bound parameter belongs to the searcher, not to the op.
    assert list(op.state_dict()) == []
    assert list(op.parameters()) == []
    op.set_forward_args(None)
    torch.testing.assert_close(op(x), torch.full((2,), 4.0))  # unbound: forward_all again
    with pytest.raises(MutableArgumentError, match="tensor"):
        op.set_forward_args([0.0, 0.0])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "arch_param",
    [torch.zeros(2), torch.zeros(4), torch.zeros(1, 3), [0.0, 0.0, 0.0]],
    ids=["short", "long", "2d", "list"],
)
def test_bad_arch_param_shape_is_rejected(arch_param: Any) -> None:
    op = DiffMutableOP({"a": nn.Identity(), "b": nn.Identity(), "c": nn.Identity()})
    with pytest.raises(MutableArgumentError):
        op.forward_arch_param(torch.ones(1), arch_param)
    with pytest.raises(MutableArgumentError):
        op.sample_choice(arch_param)


def test_diff_op_sample_choice_is_argmax() -> None:
    op = DiffMutableOP(make_convs())
    assert op.sample_choice(torch.tensor([0.1, 2.0, -1.0])) == "conv3"
    assert op.sample_choice(torch.tensor([0.1, -2.0, 5.0])) == "id"
    assert op.sample_choice(nn.Parameter(torch.tensor([3.0, -2.0, 0.0]))) == "conv1"


def test_diff_op_current_choice() -> None:
    op = DiffMutableOP(make_convs(), alias="cell0")
    assert op.choices == ["conv1", "conv3", "id"]
    assert op.num_choices == 3
    assert op.current_choice == "conv1"
    op.current_choice = "id"
    assert op.current_choice == "id"
    op.current_choice = ["conv3", "id"]
    assert op.current_choice == ["conv3", "id"]
    op.current_choice = ["conv3"]
    assert op.current_choice == "conv3"
    for bad in ("conv9", ["conv1", "nope"], [], ["id", "id"], 3):
        with pytest.raises(InvalidChoiceError, match="cell0"):
            op.current_choice = bad  # type: ignore[assignment]
    assert op.current_choice == "conv3"


def test_diff_op_fix_chosen_single() -> None:
    candidates = make_convs()
    op = DiffMutableOP(candidates)
    x = torch.randn(1, 3, 4, 4)
    op.fix_chosen("conv3")
    assert op.is_fixed and op.choices == ["conv3"] and op.current_choice == "conv3"
    assert set(op.state_dict()) == {"_candidates.conv3.weight", "_candidates.conv3.bias"}
    expected = candidates["conv3"](x)
    torch.testing.assert_close(op(x), expected, rtol=0, atol=0)
    # A fixed op ignores arch_param: only the kept candidate runs.
    torch.testing.assert_close(op(x, torch.tensor([9.0, 0.0, 0.0])), expected, rtol=0, atol=0)
    assert op.sample_choice(torch.tensor([9.0, 0.0, 0.0])) == "conv3"
    op.fix_chosen("conv3")
    op.fix_chosen(["conv3"])
    op.current_choice = "conv3"
    with pytest.raises(FixedMutableError):
        op.fix_chosen("conv1")
    with pytest.raises(FixedMutableError):
        op.current_choice = "id"
    assert op.dump_chosen() == DumpChosen("conv3", {"all_choices": ["conv1", "conv3", "id"]})


def test_diff_op_fix_chosen_list_sums_the_kept_ops() -> None:
    op = DiffMutableOP({"a": Scale(1.0), "b": Scale(2.0), "c": Scale(4.0)})
    op.fix_chosen(["c", "a"])
    assert op.choices == ["a", "c"]
    assert sorted(op.current_choice) == ["a", "c"]
    torch.testing.assert_close(op(torch.ones(2)), torch.full((2,), 5.0))
    op.fix_chosen(["a", "c"])  # same set: nothing to do
    with pytest.raises(FixedMutableError):
        op.fix_chosen(["a"])


def test_diff_op_fix_with_unknown_name_leaves_it_unfixed() -> None:
    op = DiffMutableOP(make_convs())
    with pytest.raises(InvalidChoiceError):
        op.fix_chosen("conv9")
    assert not op.is_fixed and op.num_choices == 3


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan"), "0.5", True, None])
def test_bad_fix_threshold_is_rejected(threshold: Any) -> None:
    with pytest.raises(MutableArgumentError, match="fix_threshold") as info:
        DiffMutableOP({"a": nn.Identity()}, fix_threshold=threshold)
    assert isinstance(info.value, FxRazorError)


def test_maybe_fix_respects_the_threshold() -> None:
    names = {"a": nn.Identity(), "b": nn.Identity(), "c": nn.Identity()}
    # probs 0.6, 0.3, 0.1: the leader is 0.3 ahead of the runner-up.
    close = torch.log(torch.tensor([0.6, 0.3, 0.1]))
    # probs 0.05, 0.85, 0.1: the leader is 0.75 ahead.
    clear = torch.log(torch.tensor([0.05, 0.85, 0.1]))
    op = DiffMutableOP(dict(names), fix_threshold=0.5)
    assert op.fix_threshold == 0.5
    assert op.maybe_fix(close) is False and not op.is_fixed
    assert op.maybe_fix(clear) is True
    assert op.is_fixed and op.choices == ["b"] and op.current_choice == "b"
    assert op.maybe_fix(clear) is False  # already fixed: nothing new happened
    # The default 1.0 needs a margin a softmax of moderate values never reaches.
    default = DiffMutableOP(dict(names))
    assert default.fix_threshold == 1.0
    assert default.maybe_fix(torch.tensor([5.0, 0.0, 0.0])) is False
    # Even when the float softmax rounds to exactly [1, 0, 0], the default does not fix.
    huge = torch.tensor([200.0, 0.0, 0.0])
    assert torch.equal(torch.softmax(huge, 0), torch.tensor([1.0, 0.0, 0.0]))
    assert default.maybe_fix(huge) is False
    assert not default.is_fixed
    # Just below 1, a large gap does fix.
    strict = DiffMutableOP(dict(names), fix_threshold=0.99)
    assert strict.maybe_fix(torch.tensor([3.0, 0.0, 0.0])) is False  # margin ~0.91
    assert strict.maybe_fix(torch.tensor([0.0, 0.0, 8.0])) is True  # margin ~0.999
    assert strict.choices == ["c"]
    # A single candidate has no rival: it is fixed at once, whatever the threshold.
    single = DiffMutableOP({"only": nn.Identity()})
    assert single.maybe_fix(torch.zeros(1)) is True and single.is_fixed
    # Threshold 0 fixes at once, to the argmax.
    eager = DiffMutableOP(dict(names), fix_threshold=0)
    assert eager.maybe_fix(torch.tensor([0.0, 0.1, 0.2])) is True
    assert eager.choices == ["c"]


def test_diff_mutable_module_is_abstract() -> None:
    with pytest.raises(TypeError):
        DiffMutableModule()  # type: ignore[abstract]


# ------------------------------------------------------------------------- OneHotMutableOP


def _draw_counts(op: OneHotMutableOP, arch_param: torch.Tensor, random_sample: bool) -> list[int]:
    probs = op.compute_arch_probs(arch_param)
    torch.manual_seed(0)
    counts: Counter[int] = Counter()
    for _ in range(4000):
        weights = op.sample_weights(arch_param, probs, random_sample=random_sample)
        assert sorted(weights.tolist()) == [0.0, 0.0, 1.0]  # one-hot
        assert not weights.requires_grad
        counts[int(weights.argmax())] += 1
    return [counts[i] for i in range(3)]


def test_sample_weights_draws_from_the_probabilities() -> None:
    # MMRazor: OneHotCategorical(probs=probs).sample() (before: the argmax, always)
    op = OneHotMutableOP({"a": nn.Identity(), "b": nn.Identity(), "c": nn.Identity()})
    arch_param = torch.log(torch.tensor([0.2, 0.5, 0.3]))
    # Expected 800, 2000, 1200; 150 is > 5 standard deviations for each.
    for count, expected in zip(_draw_counts(op, arch_param, False), [800, 2000, 1200],
                               strict=True):
        assert abs(count - expected) < 150


def test_sample_weights_random_sample_is_uniform() -> None:
    # MMRazor: random_sample draws from OneHotCategorical(ones_like(arch_param)), ignoring
    # the probs (before: drawn from the probs)
    op = OneHotMutableOP({"a": nn.Identity(), "b": nn.Identity(), "c": nn.Identity()})
    arch_param = torch.log(torch.tensor([0.2, 0.5, 0.3]))
    for count in _draw_counts(op, arch_param, True):
        assert abs(count - 4000 / 3) < 160  # sd ~ 30


def test_sample_weights_rejects_mismatched_probs() -> None:
    op = OneHotMutableOP({"a": nn.Identity(), "b": nn.Identity()})
    with pytest.raises(MutableArgumentError, match="probs"):
        op.sample_weights(torch.zeros(2), torch.zeros(3))
    with pytest.raises(MutableArgumentError):
        op.sample_weights(torch.zeros(3), torch.zeros(3))


def test_one_hot_forward_stores_leaf_arch_weights_for_the_searcher() -> None:
    # MMRazor/DSNAS: forward keeps a one-hot leaf `arch_weights` that requires grad; only
    # its candidate runs, times its weight; the searcher reads arch_weights.grad
    chosen = Scale(3.0)
    op = OneHotMutableOP({"a": Forbidden(), "b": chosen, "c": Forbidden()}).eval()
    arch_param = nn.Parameter(torch.tensor([-1e4, 0.0, -1e4]))  # p(b) == 1 in float
    x = torch.tensor([1.0, 2.0])
    out = op(x, arch_param)
    assert torch.equal(out.detach(), torch.tensor([3.0, 6.0]))
    assert chosen.calls == 1
    assert op.arch_weights.tolist() == [0.0, 1.0, 0.0]
    assert op.arch_weights.is_leaf and op.arch_weights.requires_grad
    out.sum().backward()
    # d(sum out)/d w_b = sum(f_b(x)) = 9; the forward gives arch_param no gradient
    assert op.arch_weights.grad.tolist() == [0.0, 9.0, 0.0]
    assert arch_param.grad is None
    # DSNAS's arch loss log((w * p).sum()) reaches arch_param: d/da_j = delta_bj - p_j = 0
    probs = op.compute_arch_probs(arch_param)
    torch.log((op.arch_weights.detach() * probs).sum()).backward()
    torch.testing.assert_close(arch_param.grad, torch.zeros(3), atol=1e-6, rtol=0)


def test_one_hot_fixes_itself_when_the_leader_is_far_enough_ahead() -> None:
    op = OneHotMutableOP({"a": Scale(1.0), "b": Scale(2.0)}, fix_threshold=0.5)
    out = op(torch.ones(2), torch.tensor([0.0, 5.0]))  # probs ~ [0.007, 0.993]
    assert op.is_fixed and op.choices == ["b"]
    assert op.arch_weights.tolist() == [0.0, 1.0]
    assert torch.equal(out.detach(), torch.full((2,), 2.0))


def test_one_hot_samples_one_op_per_forward_in_training() -> None:
    ops = {name: Scale(1.0) for name in "abc"}
    op = OneHotMutableOP(dict(ops)).train()
    arch_param = nn.Parameter(torch.zeros(3))
    torch.manual_seed(0)
    for step in range(1, 61):
        op(torch.ones(1), arch_param).sum().backward()
        assert sum(m.calls for m in ops.values()) == step  # exactly one op per forward
    assert all(m.calls > 0 for m in ops.values())  # sampling reaches every op


def test_one_hot_fixed_op_runs_the_kept_candidate() -> None:
    op = OneHotMutableOP({"a": Forbidden(), "b": Scale(2.0)})
    op.fix_chosen("b")
    assert torch.equal(op(torch.ones(2), torch.tensor([5.0, 0.0])), torch.full((2,), 2.0))
    assert "a" not in op.choices
