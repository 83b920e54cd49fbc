"""Tests for the one-shot mutable ops (fxrazor.mutables.mutable_module)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
import torch
from torch import nn

from fxrazor.errors import (
    FixedMutableError,
    FxRazorError,
    InvalidChoiceError,
    MutableArgumentError,
)
from fxrazor.mutables.base import DumpChosen
from fxrazor.mutables.mutable_module import OneShotMutableModule, OneShotMutableOP

NAMES = ["conv3x3", "conv5x5", "conv7x7"]


def make_candidates() -> nn.ModuleDict:
    torch.manual_seed(0)
    return nn.ModuleDict(
        {
            "conv3x3": nn.Conv2d(4, 4, 3, 1, 1),
            "conv5x5": nn.Conv2d(4, 4, 5, 1, 2),
            "conv7x7": nn.Conv2d(4, 4, 7, 1, 3),
        }
    )


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 4, 8, 8)


class Scale(nn.Module):
    """Multiplies its input by a constant: easy to predict by hand."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def test_construction_from_module_dict_and_plain_dict() -> None:
    candidates = make_candidates()
    for given in (candidates, dict(candidates.items())):
        op = OneShotMutableOP(given)
        assert op.choices == NAMES
        assert op.num_choices == 3
        assert op.current_choice == "conv3x3"
        assert op.is_fixed is False
        # The modules are shared with the caller, not copied.
        assert op._candidates["conv5x5"] is candidates["conv5x5"]


@pytest.mark.parametrize("name", NAMES)
def test_forward_runs_the_current_choice(name: str, x: torch.Tensor) -> None:
    candidates = make_candidates()
    op = OneShotMutableOP(candidates)
    op.current_choice = name
    assert op.current_choice == name
    torch.testing.assert_close(op(x), candidates[name](x), rtol=0, atol=0)
    torch.testing.assert_close(op.forward_choice(x, name), candidates[name](x), rtol=0, atol=0)


def test_forward_all_sums_every_candidate() -> None:
    op = OneShotMutableOP({"a": Scale(1.0), "b": Scale(2.0), "c": Scale(-0.5)})
    op.current_choice = None
    x = torch.tensor([1.0, -2.0, 4.0])
    expected = torch.tensor([2.5, -5.0, 10.0])  # (1 + 2 - 0.5) * x
    assert torch.equal(op(x), expected)
    assert torch.equal(op.forward_all(x), expected)


def test_unknown_choice_is_rejected_and_lists_the_choices() -> None:
    op = OneShotMutableOP(make_candidates(), alias="block1")
    with pytest.raises(InvalidChoiceError) as info:
        op.current_choice = "conv9x9"
    message = str(info.value)
    assert "conv9x9" in message and "block1" in message
    assert all(name in message for name in NAMES)
    assert op.current_choice == "conv3x3"
    with pytest.raises(InvalidChoiceError):
        op.current_choice = 0  # type: ignore[assignment]
    with pytest.raises(InvalidChoiceError):
        op.forward_choice(torch.zeros(1, 4, 3, 3), "nope")


@pytest.mark.parametrize(
    "candidates",
    [
        {},
        nn.ModuleDict(),
        {"conv": {"type": "Conv2d", "in_channels": 4}},
        {"conv": nn.Conv2d(1, 1, 1), "bad": 3},
        {1: nn.Identity()},
        [nn.Identity()],
    ],
    ids=["empty-dict", "empty-moduledict", "config-dict", "non-module", "non-str-key", "list"],
)
def test_bad_candidates_raise(candidates: Any) -> None:
    with pytest.raises(MutableArgumentError) as info:
        OneShotMutableOP(candidates)
    assert isinstance(info.value, FxRazorError)
    assert "OneShotMutableOP" in str(info.value)


def test_config_dict_error_says_to_pass_modules() -> None:
    with pytest.raises(MutableArgumentError, match="not an nn.Module"):
        OneShotMutableOP({"conv": {"type": "Conv2d"}})


def test_module_kwargs_are_kept_and_validated() -> None:
    op = OneShotMutableOP({"id": nn.Identity()}, module_kwargs={"stride": 2}, alias="a")
    assert op.module_kwargs == {"stride": 2}
    assert op.alias == "a"
    assert OneShotMutableOP({"id": nn.Identity()}).module_kwargs == {}
    with pytest.raises(MutableArgumentError, match="module_kwargs"):
        OneShotMutableOP({"id": nn.Identity()}, module_kwargs=[1, 2])  # type: ignore[arg-type]


def test_sample_choice_is_uniform_and_seeded() -> None:
    op = OneShotMutableOP(make_candidates())
    random.seed(0)
    first = [op.sample_choice() for _ in range(20)]
    random.seed(0)
    assert [op.sample_choice() for _ in range(20)] == first
    counts = Counter(op.sample_choice() for _ in range(3000))
    assert set(counts) == set(NAMES)
    # Each of 3 names expected 1000 times; 150 is > 5 standard deviations (~25.8).
    assert all(abs(count - 1000) < 150 for count in counts.values())


def test_fix_chosen_removes_other_candidates(x: torch.Tensor) -> None:
    candidates = make_candidates()
    op = OneShotMutableOP(candidates)
    op.current_choice = "conv5x5"
    before = op(x)
    op.fix_chosen("conv5x5")
    assert op.is_fixed is True
    assert op.choices == ["conv5x5"]
    assert op.num_choices == 1
    assert op.current_choice == "conv5x5"
    assert set(op.state_dict()) == {"_candidates.conv5x5.weight", "_candidates.conv5x5.bias"}
    n_params = sum(p.numel() for p in op.parameters())
    assert n_params == 4 * 4 * 5 * 5 + 4
    torch.testing.assert_close(op(x), before, rtol=0, atol=0)
    torch.testing.assert_close(op.forward_fixed(x), candidates["conv5x5"](x), rtol=0, atol=0)
    # The caller's container keeps its entries: only the op's copy was pruned.
    assert list(candidates.keys()) == NAMES


def test_fixed_op_refuses_changes() -> None:
    op = OneShotMutableOP(make_candidates())
    op.fix_chosen("conv7x7")
    op.fix_chosen("conv7x7")  # same name again: nothing to do
    op.current_choice = "conv7x7"  # the fixed name is accepted
    with pytest.raises(FixedMutableError, match="conv7x7"):
        op.fix_chosen("conv3x3")
    with pytest.raises(FixedMutableError):
        op.current_choice = "conv3x3"
    with pytest.raises(FixedMutableError):
        op.current_choice = None
    with pytest.raises(FixedMutableError):
        op.is_fixed = False
    assert op.choices == ["conv7x7"]
    assert op.sample_choice() == "conv7x7"


def test_fix_with_unknown_name_leaves_op_unfixed() -> None:
    op = OneShotMutableOP(make_candidates())
    with pytest.raises(InvalidChoiceError):
        op.fix_chosen("conv9x9")
    assert op.is_fixed is False
    assert op.choices == NAMES


def test_dump_chosen() -> None:
    op = OneShotMutableOP(make_candidates())
    op.current_choice = "conv5x5"
    dumped = op.dump_chosen()
    assert isinstance(dumped, DumpChosen)
    assert dumped == DumpChosen(chosen="conv5x5", meta={"all_choices": NAMES})
    op.fix_chosen("conv5x5")
    assert op.dump_chosen() == DumpChosen(chosen="conv5x5", meta={"all_choices": NAMES})
    # The meta list is a copy; editing it does not change the op.
    op.dump_chosen().meta["all_choices"].append("x")  # type: ignore[index]
    assert op.dump_chosen().meta == {"all_choices": NAMES}


class Recorder(OneShotMutableModule):
    """A minimal subclass that records which forward path ran."""

    def __init__(self) -> None:
        super().__init__()
        self._choice: str | None = "a"

    @property
    def choices(self) -> list[str]:
        return ["a", "b"]

    @property
    def current_choice(self) -> str | None:
        return self._choice

    @current_choice.setter
    def current_choice(self, choice: str | None) -> None:
        self._choice = choice

    def sample_choice(self) -> str:
        return "a"

    def forward_choice(self, x: Any, choice: str) -> str:
        return f"choice:{choice}"

    def forward_fixed(self, x: Any) -> str:
        return "fixed"

    def forward_all(self, x: Any) -> str:
        return "all"

    def fix_chosen(self, chosen: str) -> None:
        self.is_fixed = True

    def dump_chosen(self) -> DumpChosen:
        return DumpChosen(self._choice)


def test_one_shot_forward_dispatch() -> None:
    module = Recorder()
    assert module.num_choices == 2
    assert module(0) == "choice:a"
    module.current_choice = "b"
    assert module(0) == "choice:b"
    module.current_choice = None
    assert module(0) == "all"
    module.fix_chosen("a")
    assert module(0) == "fixed"


def test_one_shot_module_is_abstract() -> None:
    with pytest.raises(TypeError):
        OneShotMutableModule()  # type: ignore[abstract]


def test_mutable_modules_have_mmrazors_module_prefix() -> None:
    from fxrazor.mutables.diff_mutable import DiffChoiceRoute, DiffMutableOP

    assert OneShotMutableOP({"id": nn.Identity()}).mutable_prefix == "module"
    assert DiffMutableOP({"id": nn.Identity()}).mutable_prefix == "module"
    assert DiffChoiceRoute({"id": nn.Identity()}, num_chosen=1).mutable_prefix == "module"
