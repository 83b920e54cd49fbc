"""Tests for MutableValue and OneShotMutableValue."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from fxrazor.errors import (
    ChoiceTypeError,
    FixedMutableError,
    FxRazorError,
    InvalidChoiceError,
)
from fxrazor.mutables.base import DumpChosen
from fxrazor.mutables.derived_mutable import DerivedMutable
from fxrazor.mutables.mutable_value import MutableValue, OneShotMutableValue


def test_defaults_and_basic_properties():
    mv = MutableValue([3, 5, 7])
    assert mv.current_choice == 3  # first value
    assert mv.choices == [3, 5, 7]
    assert mv.num_choices == 3
    assert mv.mutable_prefix == "value"
    assert not mv.is_fixed
    assert MutableValue([3, 5, 7], default_value=7).current_choice == 7


def test_choices_is_a_copy():
    mv = MutableValue([1, 2])
    mv.choices.append(99)
    assert mv.choices == [1, 2]


def test_alias_and_init_cfg_are_stored():
    mv = MutableValue([1, 2], alias="depth", init_cfg={"a": 1})
    assert mv.alias == "depth"
    assert mv.init_cfg == {"a": 1}


@pytest.mark.parametrize(
    "values, error",
    [
        ([], InvalidChoiceError),
        ([1, 2.0], ChoiceTypeError),
        ([1, True], ChoiceTypeError),
        ([1, "a"], ChoiceTypeError),
        ([1, 1], InvalidChoiceError),
        ("abc", ChoiceTypeError),
        (5, ChoiceTypeError),
    ],
)
def test_bad_value_lists(values, error):
    with pytest.raises(error):
        MutableValue(values)


def test_mixed_types_error_is_a_type_error_and_names_types():
    with pytest.raises(TypeError, match="float, int"):
        MutableValue([1, 2.0])


def test_default_not_in_list_raises():
    with pytest.raises(InvalidChoiceError, match=r"\[1, 2\]"):
        MutableValue([1, 2], default_value=3)


def test_set_valid_and_invalid_choice():
    mv = MutableValue([1, 2, 3])
    mv.current_choice = 2
    assert mv.current_choice == 2
    with pytest.raises(InvalidChoiceError, match=r"valid choices are \[1, 2, 3\]"):
        mv.current_choice = 4
    assert mv.current_choice == 2
    with pytest.raises(ChoiceTypeError):
        mv.current_choice = True  # True == 1, but it is not an int choice


def test_equal_number_is_stored_as_list_element():
    mv = MutableValue([0.5, 1.0])
    mv.current_choice = 1
    assert mv.current_choice == 1.0
    assert isinstance(mv.current_choice, float)


def test_non_numeric_values():
    mv = MutableValue([(3, 3), (5, 5)])
    mv.current_choice = (5, 5)
    assert mv.current_choice == (5, 5)
    bools = MutableValue([False, True])
    bools.current_choice = True
    assert bools.current_choice is True
    with pytest.raises(ChoiceTypeError):
        bools.current_choice = 1


def test_fix_chosen():
    mv = MutableValue([1, 2, 3])
    mv.fix_chosen(2)
    assert mv.is_fixed
    assert mv.choices == [2]
    assert mv.num_choices == 1
    assert mv.current_choice == 2
    mv.current_choice = 2  # setting the fixed value is allowed
    mv.fix_chosen(2)  # fixing again to the same value is a no-op
    with pytest.raises(FixedMutableError, match="fixed to 2"):
        mv.current_choice = 3
    with pytest.raises(FixedMutableError):
        mv.fix_chosen(1)
    with pytest.raises(FixedMutableError):
        mv.current_choice = 99  # even an invalid value reports the fixed state
    with pytest.raises(FixedMutableError):
        mv.is_fixed = False


def test_fix_chosen_requires_valid_choice():
    mv = MutableValue([1, 2, 3])
    with pytest.raises(InvalidChoiceError):
        mv.fix_chosen(4)
    assert not mv.is_fixed
    assert mv.choices == [1, 2, 3]


def test_dump_chosen():
    mv = MutableValue([1, 2, 3], default_value=3)
    assert mv.dump_chosen() == DumpChosen(chosen=3, meta={"all_choices": [1, 2, 3]})


def test_errors_are_fxrazor_errors():
    assert issubclass(ChoiceTypeError, FxRazorError)
    assert issubclass(ChoiceTypeError, InvalidChoiceError)


def test_repr_is_readable():
    assert (
        repr(MutableValue([1, 2]))
        == "MutableValue(choices=[1, 2], current_choice=1, is_fixed=False)"
    )


def test_arithmetic_returns_derived_mutables_that_follow_the_source():
    mv = MutableValue([2, 4, 8])
    times3, rtimes, halved = mv * 3, 3 * mv, mv // 2
    for derived in (times3, rtimes, halved):
        assert isinstance(derived, DerivedMutable)
        assert derived.source_mutables == {mv}
    # MMRazor: expand gives int(c * r); divide gives make_divisible(c // r, 8)
    mv.current_choice = 8
    assert (times3.current_choice, rtimes.current_choice, halved.current_choice) == (24, 24, 8)
    mv.current_choice = 2
    assert (times3.current_choice, halved.current_choice) == (6, 8)
    assert (mv * 0.5).current_choice == 1  # int(2 * 0.5)
    assert (mv * 0.75).current_choice == 1  # int(1.5)
    assert (mv // (2, 1)).current_choice == 1  # divisor 1: floor division
    big = MutableValue([96, 160])
    assert (big // 4).current_choice == 24  # 96 // 4 = 24, a multiple of 8
    big.current_choice = 160
    assert (big // (4, 16)).current_choice == 48  # 40 -> 48 (40 + 8 = 48)


def test_arithmetic_with_non_numbers_is_a_type_error():
    mv = MutableValue([1, 2])
    with pytest.raises(TypeError):
        mv * "x"  # noqa: B018
    with pytest.raises(TypeError):
        mv // mv  # noqa: B018
    with pytest.raises(TypeError):
        mv * True  # noqa: B018


def test_derived_value_has_no_mask():
    derived = MutableValue([1, 2]) * 2
    with pytest.raises(FxRazorError, match="mask_fn"):
        derived.current_mask  # noqa: B018


def test_one_shot_sorts_and_defaults_to_max():
    mv = OneShotMutableValue([5, 1, 3])
    assert mv.choices == [1, 3, 5]
    assert mv.current_choice == 5
    assert (mv.min_choice, mv.max_choice) == (1, 5)
    assert OneShotMutableValue([5, 1, 3], default_value=1).current_choice == 1


def test_one_shot_bad_inputs():
    with pytest.raises(InvalidChoiceError):
        OneShotMutableValue([])
    with pytest.raises(ChoiceTypeError):
        OneShotMutableValue([1, 2.5])
    with pytest.raises(InvalidChoiceError):
        OneShotMutableValue([1, 2], default_value=3)


def test_one_shot_unorderable_values():
    with pytest.raises(ChoiceTypeError, match="ordered"):
        OneShotMutableValue([1j, 2j])


def test_one_shot_sample_choice_is_uniform():
    random.seed(0)
    mv = OneShotMutableValue([1, 2, 3, 4])
    counts = Counter(mv.sample_choice() for _ in range(4000))
    assert set(counts) == {1, 2, 3, 4}
    assert all(800 < n < 1200 for n in counts.values())


def test_one_shot_fix():
    mv = OneShotMutableValue([1, 2, 3])
    mv.fix_chosen(1)
    assert mv.choices == [1]
    assert mv.min_choice == mv.max_choice == 1
    assert mv.sample_choice() == 1
