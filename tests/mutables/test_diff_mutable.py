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
    with pytest.raises(MutableArgumentError, match="arch_param"):
        op(x)
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
    with pytest.raises(MutableArgumentError):
        op(x)
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


def test_sample_weights_argmax_is_exactly_one_hot_with_gradient() -> None:
    op = OneHotMutableOP({"a": nn.Identity(), "b": nn.Identity(), "c": nn.Identity()})
    values = [0.2, 1.3, -0.4]
    arch_param = nn.Parameter(torch.tensor(values))
    probs = op.compute_arch_probs(arch_param)
    weights = op.sample_weights(arch_param, probs)
    assert torch.equal(weights.detach(), torch.tensor([0.0, 1.0, 0.0]))
    coeffs = torch.tensor([1.0, 2.0, 5.0])
    (weights * coeffs).sum().backward()
    # Straight-through: the gradient is that of sum(coeffs * p): p_j * (c_j - sum_k p_k c_k).
    p = softmax_by_hand(values)
    mean_c = sum(pk * ck for pk, ck in zip(p, coeffs.tolist(), strict=True))
    expected = [pj * (cj - mean_c) for pj, cj in zip(p, coeffs.tolist(), strict=True)]
    torch.testing.assert_close(arch_param.grad, torch.tensor(expected))


def test_sample_weights_random_follows_the_probabilities() -> None:
    op = OneHotMutableOP({"a": nn.Identity(), "b": nn.Identity(), "c": nn.Identity()})
    arch_param = torch.log(torch.tensor([0.2, 0.5, 0.3]))
    probs = op.compute_arch_probs(arch_param)
    torch.manual_seed(0)
    counts: Counter[int] = Counter()
    for _ in range(4000):
        weights = op.sample_weights(arch_param, probs, random_sample=True)
        assert sorted(weights.tolist()) == [0.0, 0.0, 1.0]
        counts[int(weights.argmax())] += 1
    # Expected 800, 2000, 1200; 150 is > 5 standard deviations for each.
    for index, expected in enumerate([800, 2000, 1200]):
        assert abs(counts[index] - expected) < 150


def test_sample_weights_rejects_mismatched_probs() -> None:
    op = OneHotMutableOP({"a": nn.Identity(), "b": nn.Identity()})
    with pytest.raises(MutableArgumentError, match="probs"):
        op.sample_weights(torch.zeros(2), torch.zeros(3))
    with pytest.raises(MutableArgumentError):
        op.sample_weights(torch.zeros(3), torch.zeros(3))


def test_one_hot_runs_only_the_argmax_op_in_eval() -> None:
    chosen = Scale(3.0)
    op = OneHotMutableOP({"a": Forbidden(), "b": chosen, "c": Forbidden()}).eval()
    values = [0.1, 0.9, -0.3]
    arch_param = nn.Parameter(torch.tensor(values))
    x = torch.tensor([1.0, 2.0])
    out = op(x, arch_param)
    assert torch.equal(out.detach(), torch.tensor([3.0, 6.0]))
    assert chosen.calls == 1
    out.sum().backward()
    assert arch_param.grad is not None
    # d(sum out)/d a_j = sum(f(x)) * p_b * (delta_bj - p_j), with sum(f(x)) = 9.
    p = softmax_by_hand(values)
    expected = [9.0 * p[1] * ((1.0 if j == 1 else 0.0) - p[j]) for j in range(3)]
    torch.testing.assert_close(arch_param.grad, torch.tensor(expected))


def test_one_hot_samples_one_op_per_forward_in_training() -> None:
    ops = {name: Scale(1.0) for name in "abc"}
    op = OneHotMutableOP(dict(ops)).train()
    arch_param = nn.Parameter(torch.zeros(3))
    torch.manual_seed(0)
    for step in range(1, 61):
        op(torch.ones(1), arch_param).sum().backward()
        assert sum(m.calls for m in ops.values()) == step  # exactly one op per forward
    assert all(m.calls > 0 for m in ops.values())  # sampling reaches every op
    assert arch_param.grad is not None


def test_one_hot_fixed_op_runs_the_kept_candidate() -> None:
    op = OneHotMutableOP({"a": Forbidden(), "b": Scale(2.0)})
    op.fix_chosen("b")
    assert torch.equal(op(torch.ones(2), torch.tensor([5.0, 0.0])), torch.full((2,), 2.0))
    assert "a" not in op.choices
