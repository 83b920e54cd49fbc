"""Tests for the mutable channels."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from fxrazor.errors import ChoiceTypeError, FixedMutableError, InvalidChoiceError
from fxrazor.mutables.derived_mutable import DerivedMutable
from fxrazor.mutables.mutable_channel import (
    BaseMutableChannel,
    SequentialMutableChannel,
    SimpleMutableChannel,
    SquentialMutableChannel,
)
from fxrazor.mutables.one_shot_channel import OneShotMutableChannel


def bools(s: str) -> list[bool]:
    """'1100' -> [True, True, False, False]: expected masks written by hand."""
    return [c == "1" for c in s]


def test_base_is_abstract():
    with pytest.raises(TypeError):
        BaseMutableChannel(3)


@pytest.mark.parametrize("cls", [SimpleMutableChannel, SquentialMutableChannel])
@pytest.mark.parametrize(
    "n, error",
    [
        (0, InvalidChoiceError),
        (-2, InvalidChoiceError),
        (2.0, ChoiceTypeError),
        (True, ChoiceTypeError),
    ],
)
def test_bad_num_channels(cls, n, error):
    with pytest.raises(error, match="num_channels"):
        cls(n)


def test_common_attributes():
    mc = SquentialMutableChannel(3, alias="w")
    assert mc.name == "unbind"
    mc.name = "stem"
    assert repr(mc) == "SquentialMutableChannel(name=stem, num_channels=3, current_choice=3)"
    assert mc.mutable_prefix == "channel"
    assert mc.num_choices() == 1
    assert mc.alias == "w"
    assert SequentialMutableChannel is SquentialMutableChannel


# ---- SimpleMutableChannel ----


def test_simple_defaults_and_setting_a_mask():
    mc = SimpleMutableChannel(4)
    assert mc.current_mask.tolist() == bools("1111")
    mask = torch.tensor(bools("0101"))
    mc.current_choice = mask
    mask[0] = True  # the mutable keeps its own copy
    assert mc.current_choice.tolist() == bools("0101")
    assert mc.current_mask.tolist() == bools("0101")
    assert mc.activated_channels == 2
    assert repr(mc) == "SimpleMutableChannel(name=unbind, num_channels=4, activated_channels=2)"
    mc.current_choice = torch.zeros(4, dtype=torch.bool)  # an all-off mask is allowed
    assert mc.activated_channels == 0


def test_simple_bad_masks():
    mc = SimpleMutableChannel(3)
    with pytest.raises(ChoiceTypeError):
        mc.current_choice = torch.ones(3)  # float, not bool
    with pytest.raises(ChoiceTypeError):
        mc.current_choice = [True, True, True]
    with pytest.raises(InvalidChoiceError, match=r"\(3,\)"):
        mc.current_choice = torch.ones(4, dtype=torch.bool)
    with pytest.raises(InvalidChoiceError):
        mc.current_choice = torch.ones(1, 3, dtype=torch.bool)


def test_simple_fix_and_dump():
    mc = SimpleMutableChannel(3)
    mask = torch.tensor(bools("101"))
    mc.fix_chosen(mask)
    assert mc.is_fixed
    mc.current_choice = torch.tensor(bools("101"))  # same mask is fine
    mc.fix_chosen()  # no-op
    with pytest.raises(FixedMutableError):
        mc.current_choice = torch.tensor(bools("111"))
    with pytest.raises(FixedMutableError):
        mc.fix_chosen(torch.tensor(bools("111")))
    dumped = mc.dump_chosen()
    assert dumped.chosen.tolist() == bools("101")
    assert dumped.meta == {"max_channels": 3}


def test_simple_expand_mutable_channel():
    mc = SimpleMutableChannel(3)
    mc.current_choice = torch.tensor(bools("011"))
    expanded = mc.expand_mutable_channel(2)
    assert isinstance(expanded, DerivedMutable)
    assert expanded.current_mask.tolist() == bools("001111")
    assert expanded.current_choice.tolist() == bools("001111")
    assert expanded.source_mutables == {mc}
    mc.current_choice = torch.tensor(bools("100"))
    assert expanded.current_mask.tolist() == bools("110000")
    assert mc.expand_mutable_channel(2.0).num_channels == 6
    with pytest.raises(InvalidChoiceError):
        mc.expand_mutable_channel(1.5)
    with pytest.raises(InvalidChoiceError):
        mc.expand_mutable_channel(0)
    with pytest.raises(ChoiceTypeError):
        mc.expand_mutable_channel("2")


# ---- SquentialMutableChannel ----


def test_sequential_number_mode():
    mc = SquentialMutableChannel(5)
    assert mc.is_num_mode
    assert mc.current_choice == 5
    assert mc.current_mask.tolist() == bools("11111")
    mc.current_choice = 2
    assert mc.current_mask.tolist() == bools("11000")
    assert mc.activated_channels == 2
    assert mc.current_mask.dtype == torch.bool


@pytest.mark.parametrize(
    "choice, error",
    [
        (0, InvalidChoiceError),
        (6, InvalidChoiceError),
        (-1, InvalidChoiceError),
        (2.0, InvalidChoiceError),  # a float is a ratio: out of (0, 1]
        (True, ChoiceTypeError),
        ("2", ChoiceTypeError),
        (None, ChoiceTypeError),
    ],
)
def test_sequential_number_mode_bad_choices(choice, error):
    mc = SquentialMutableChannel(5)
    with pytest.raises(error, match=r"\[1, 5\]"):
        mc.current_choice = choice
    assert mc.current_choice == 5


@pytest.mark.parametrize(
    "ratio, kept",
    # floor(r * 10 + 0.5), at least one: computed by hand
    [(1.0, 10), (0.5, 5), (0.25, 3), (0.24, 2), (0.05, 1), (0.01, 1)],
)
def test_sequential_ratio_mode(ratio, kept):
    mc = SquentialMutableChannel(10, choice_mode="ratio")
    assert not mc.is_num_mode
    assert mc.current_choice == 1.0
    mc.current_choice = ratio
    assert mc.current_choice == ratio
    assert mc.activated_channels == kept
    assert mc.current_mask.tolist() == [True] * kept + [False] * (10 - kept)


@pytest.mark.parametrize(
    "choice, error",
    [
        (0.0, InvalidChoiceError),
        (1.5, InvalidChoiceError),
        (-0.5, InvalidChoiceError),
        (float("nan"), InvalidChoiceError),
        (5, InvalidChoiceError),  # an int is a count: out of [1, 4]
        (True, ChoiceTypeError),
        ("0.5", ChoiceTypeError),
    ],
)
def test_sequential_ratio_mode_bad_choices(choice, error):
    mc = SquentialMutableChannel(4, choice_mode="ratio")
    with pytest.raises(error, match=r"\(0, 1\]"):
        mc.current_choice = choice


def test_sequential_bad_choice_mode():
    with pytest.raises(InvalidChoiceError, match="'number' or 'ratio'"):
        SquentialMutableChannel(4, choice_mode="percent")


def test_sequential_fix():
    mc = SquentialMutableChannel(4)
    mc.current_choice = 3
    mc.fix_chosen()
    assert mc.is_fixed and mc.current_choice == 3
    mc.fix_chosen(3)
    mc.current_choice = 3
    with pytest.raises(FixedMutableError):
        mc.current_choice = 2
    with pytest.raises(FixedMutableError):
        mc.fix_chosen(2)
    other = SquentialMutableChannel(4)
    other.fix_chosen(1)
    assert other.current_mask.tolist() == bools("1000")
    with pytest.raises(InvalidChoiceError):
        SquentialMutableChannel(4).fix_chosen(9)


def test_sequential_fix_chosen_ellipsis_means_current_choice():
    # MMRazor: SquentialMutableChannel.fix_chosen(chosen=...); `...` fixes the current
    # choice (before, `...` reached the choice check and raised ChoiceTypeError)
    mc = SquentialMutableChannel(6)
    mc.current_choice = 4
    mc.fix_chosen(...)
    assert mc.is_fixed and mc.current_choice == 4
    assert mc.current_mask.tolist() == bools("111100")
    ratio = OneShotMutableChannel(8, [0.25, 0.5, 1.0], choice_mode="ratio")
    ratio.current_choice = 0.5
    ratio.fix_chosen(...)
    assert ratio.is_fixed and ratio.choices == [0.5] and ratio.activated_channels == 4
    import inspect

    for cls in (SquentialMutableChannel, OneShotMutableChannel):
        assert inspect.signature(cls.fix_chosen).parameters["chosen"].default is ...
    assert inspect.signature(SimpleMutableChannel.fix_chosen).parameters["chosen"].default is None


def test_num_choices_is_a_method_on_mutable_channels():
    # the reference: BaseMutableChannel.num_choices() -> int (a method)
    assert SquentialMutableChannel(4).num_choices() == 1
    assert SimpleMutableChannel(4).num_choices() == 1
    assert OneShotMutableChannel(8, [2, 4, 8]).num_choices() == 3
    assert callable(OneShotMutableChannel(8, [2, 4]).num_choices)


def test_sequential_dump():
    mc = SquentialMutableChannel(4, choice_mode="ratio")
    mc.current_choice = 0.5
    dumped = mc.dump_chosen()
    assert dumped.chosen == 0.5
    assert dumped.meta == {"max_channels": 4}


def test_mutable_channel_is_not_in_state_dict():
    assert dict(SquentialMutableChannel(4).state_dict()) == {}


# ---- OneShotMutableChannel ----


def test_one_shot_candidates():
    mc = OneShotMutableChannel(8, candidate_choices=[8, 2, 4])
    assert mc.choices == [2, 4, 8]
    assert mc.candidate_choices == [2, 4, 8]
    assert mc.num_choices() == 3
    assert (mc.min_choice, mc.max_choice, mc.current_choice) == (2, 8, 8)
    mc.current_choice = 4
    assert mc.current_mask.tolist() == bools("11110000")
    with pytest.raises(InvalidChoiceError, match=r"candidates are \[2, 4, 8\]"):
        mc.current_choice = 3
    with pytest.raises(InvalidChoiceError, match="a float is a ratio"):
        mc.current_choice = 4.0
    mc.current_choice = 0.25  # a ratio: 2 of 8 channels, a candidate
    assert mc.current_choice == 2


def test_one_shot_ratio_mode_and_default_candidates():
    mc = OneShotMutableChannel(4, candidate_choices=[0.5, 1.0], choice_mode="ratio")
    assert mc.current_choice == 1.0
    mc.current_choice = 0.5
    assert mc.activated_channels == 2
    assert OneShotMutableChannel(4).choices == [4]
    assert OneShotMutableChannel(4, choice_mode="ratio").choices == [1.0]


@pytest.mark.parametrize(
    "candidates, mode, error",
    [
        ([0, 2], "number", InvalidChoiceError),
        ([2, 9], "number", InvalidChoiceError),
        ([0.5, 4], "number", InvalidChoiceError),  # the same count twice
        ([9], "ratio", InvalidChoiceError),
        ([2, 2], "number", InvalidChoiceError),
        ("24", "number", ChoiceTypeError),
        ([1.5], "ratio", InvalidChoiceError),
    ],
)
def test_one_shot_bad_candidates(candidates, mode, error):
    with pytest.raises(error):
        OneShotMutableChannel(8, candidate_choices=candidates, choice_mode=mode)


def test_one_shot_sample_choice_is_uniform():
    random.seed(1)
    mc = OneShotMutableChannel(8, candidate_choices=[2, 4, 8])
    counts = Counter(mc.sample_choice() for _ in range(3000))
    assert set(counts) == {2, 4, 8}
    assert all(850 < n < 1150 for n in counts.values())


def test_one_shot_fix_and_dump():
    mc = OneShotMutableChannel(8, candidate_choices=[2, 4, 8])
    assert mc.dump_chosen().meta == {"all_choices": [2, 4, 8], "max_channels": 8}
    with pytest.raises(InvalidChoiceError):
        mc.fix_chosen(3)
    assert not mc.is_fixed
    mc.fix_chosen(4)
    assert mc.is_fixed
    assert mc.choices == [4]
    assert mc.sample_choice() == 4
    assert mc.dump_chosen().chosen == 4
    with pytest.raises(FixedMutableError):
        mc.current_choice = 8
    with pytest.raises(FixedMutableError):
        mc.fix_chosen(2)


@pytest.mark.parametrize(
    "mode, choice, stored, kept",
    # 10 channels; a ratio r keeps floor(10 r + 0.5), a count k is k / 10 as a ratio
    [("number", 0.5, 5, 5), ("number", 0.24, 2, 2), ("number", 1.0, 10, 10),
     ("number", 0.01, 1, 1), ("ratio", 3, 0.3, 3), ("ratio", 10, 1.0, 10),
     ("ratio", 1, 0.1, 1), ("number", "max", 10, 10), ("number", "min", 1, 1),
     ("ratio", "max", 1.0, 10), ("ratio", "min", 0.1, 1)],
)
def test_sequential_takes_a_count_or_a_ratio_in_either_mode(mode, choice, stored, kept):
    mc = SquentialMutableChannel(10, choice_mode=mode)
    mc.current_choice = choice
    assert mc.current_choice == pytest.approx(stored)
    assert type(mc.current_choice) is (int if mode == "number" else float)
    assert mc.activated_channels == kept
    assert mc.kept_for(choice) == kept


def test_one_shot_converts_to_its_candidates_and_max_min_are_theirs():
    mc = OneShotMutableChannel(16, candidate_choices=[0.25, 0.5, 1.0], choice_mode="number")
    assert mc.choices == [4, 8, 16]
    mc.current_choice = 0.5
    assert mc.current_choice == 8
    mc.current_choice = "min"
    assert mc.current_choice == 4
    mc.current_choice = "max"
    assert mc.current_choice == 16
    with pytest.raises(InvalidChoiceError, match="not a candidate"):
        mc.current_choice = 0.75  # 12 channels: not among the candidates
    ratio = OneShotMutableChannel(16, candidate_choices=[0.5, 1.0], choice_mode="ratio")
    ratio.current_choice = 8
    assert ratio.current_choice == 0.5


@pytest.mark.parametrize("choice", ["half", None, [4], True])
def test_a_bad_choice_names_every_valid_form(choice):
    mc = SquentialMutableChannel(6, choice_mode="ratio")
    with pytest.raises(ChoiceTypeError) as info:
        mc.current_choice = choice
    message = str(info.value)
    assert "(ratio mode)" in message and "[1, 6]" in message and "(0, 1]" in message
    assert "'max'" in message and "'min'" in message
