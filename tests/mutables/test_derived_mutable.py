"""Tests for DerivedMutable, the derivation operators and concat_mutable_channels."""

from __future__ import annotations

import functools

import pytest
import torch

from fxrazor.errors import (
    ChoiceTypeError,
    DerivedMutableError,
    FxRazorError,
    InvalidChoiceError,
)
from fxrazor.mutables.derived_mutable import DerivedMutable, concat_mutable_channels
from fxrazor.mutables.mutable_channel import (
    OneShotMutableChannel,
    SimpleMutableChannel,
    SquentialMutableChannel,
)
from fxrazor.mutables.mutable_value import MutableValue


def bools(s: str) -> list[bool]:
    """'1100' -> [True, True, False, False]: expected masks written by hand."""
    return [c == "1" for c in s]


def test_documented_example():
    mc = SquentialMutableChannel(num_channels=3)
    derived = mc * 2
    assert derived.source_mutables == {mc}
    mc.current_choice = 2
    assert derived.current_choice == 4
    assert derived.current_mask.tolist() == bools("111100")
    assert derived.activated_channels == 4
    assert derived.num_channels == 6
    assert repr(derived) == (
        "DerivedMutable(current_choice=4, activated_channels=4, source_mutables="
        "{SquentialMutableChannel(name=unbind, num_channels=3, current_choice=2)}, "
        "is_fixed=False)"
    )


def test_expand_repeats_each_channel_consecutively():
    mc = SimpleMutableChannel(3)
    mc.current_choice = torch.tensor([True, False, True])
    for derived in (mc * 3, 3 * mc, mc.derive_expand_mutable(3)):
        assert derived.current_mask.tolist() == bools("111000111")
        assert derived.current_choice == 6


def test_divide_keeps_groups_whose_channels_are_all_kept():
    mc = SimpleMutableChannel(6)
    mc.current_choice = torch.tensor(bools("110111"))
    for derived in (mc // 2, mc.derive_divide_mutable(2)):
        # groups (0,1), (2,3), (4,5): only the middle one has a dropped channel
        assert derived.current_mask.tolist() == bools("101")
        assert derived.current_choice == 2


def test_divide_of_sequential_keeps_choice_floor_divided():
    mc = SquentialMutableChannel(8)
    derived = mc // 4
    for choice, kept in [(8, 2), (7, 1), (4, 1), (3, 0)]:
        mc.current_choice = choice
        assert derived.current_choice == kept
        assert derived.current_mask.tolist() == [True] * kept + [False] * (2 - kept)


@pytest.mark.parametrize("ratio, error", [(0, InvalidChoiceError), (1.5, InvalidChoiceError)])
def test_bad_channel_ratios(ratio, error):
    mc = SquentialMutableChannel(6)
    with pytest.raises(error):
        mc.derive_expand_mutable(ratio)
    with pytest.raises(error):
        mc.derive_divide_mutable(ratio)


def test_bad_ratio_types_and_indivisible_channels():
    mc = SquentialMutableChannel(6)
    with pytest.raises(ChoiceTypeError):
        mc.derive_expand_mutable("2")
    with pytest.raises(ChoiceTypeError):
        MutableValue([1, 2]).derive_divide_mutable(None)
    with pytest.raises(InvalidChoiceError, match="groups of 4"):
        mc // 4  # noqa: B018
    assert (mc * 2.0).current_choice == 12  # an integral float is accepted


def test_derive_same_mutable():
    mc = SquentialMutableChannel(4)
    same = mc.derive_same_mutable()
    mc.current_choice = 3
    assert same.current_choice == 3
    assert same.current_mask.tolist() == bools("1110")
    value_same = MutableValue([1, 2], default_value=2).derive_same_mutable()
    assert value_same.current_choice == 2
    assert value_same.mask_fn is None


def test_cannot_set_choice_or_mask():
    derived = SquentialMutableChannel(3) * 2
    with pytest.raises(DerivedMutableError, match="source mutables"):
        derived.current_choice = 2
    with pytest.raises(DerivedMutableError, match="source mutables"):
        derived.current_mask = torch.ones(6, dtype=torch.bool)
    with pytest.raises(DerivedMutableError):
        derived.is_fixed = True
    assert issubclass(DerivedMutableError, FxRazorError)


def test_fix_chosen_warns_and_does_nothing():
    mc = SquentialMutableChannel(3)
    derived = mc * 2
    with pytest.warns(UserWarning, match="no effect"):
        derived.fix_chosen(4)
    assert not mc.is_fixed
    assert not derived.is_fixed
    assert derived.current_choice == 6


def test_is_fixed_follows_all_sources():
    a, b = SquentialMutableChannel(2), SquentialMutableChannel(3)
    cat = concat_mutable_channels([a, b])
    assert cat.source_mutables == {a, b}
    a.fix_chosen()
    assert not cat.is_fixed
    b.fix_chosen(1)
    assert cat.is_fixed


def test_dump_chosen_and_num_choices():
    mc = SquentialMutableChannel(3)
    derived = mc * 2
    dumped = derived.dump_chosen()
    assert dumped.chosen == 6
    assert dumped.meta is None
    assert derived.num_choices == 1


def test_is_source_mutable():
    mc = SquentialMutableChannel(3)
    assert DerivedMutable.is_source_mutable(mc)
    assert not DerivedMutable.is_source_mutable(mc * 2)
    assert not DerivedMutable.is_source_mutable(torch.nn.Linear(1, 1))
    assert not DerivedMutable.is_source_mutable(3)


def test_nested_derived_finds_the_original_source():
    mc = SquentialMutableChannel(4)
    nested = (mc * 2) // 4
    assert nested.source_mutables == {mc}
    mc.current_choice = 2  # mask 1100 -> 11110000 -> groups of 4: 10
    assert nested.current_mask.tolist() == bools("10")
    assert nested.current_choice == 1
    assert ((mc * 2) * 3).source_mutables == {mc}


def test_sources_found_in_closures_partials_methods_and_lists():
    a, b, c = MutableValue([1, 2]), MutableValue([3, 4]), MutableValue([5, 6])
    inner = a * 10

    def fn():
        return inner.current_choice + b.current_choice

    assert DerivedMutable(choice_fn=fn).source_mutables == {a, b}

    def add(x, y):
        return x.current_choice + y.current_choice

    partial = functools.partial(add, a, y=c)
    assert DerivedMutable(choice_fn=partial).current_choice == 6
    assert DerivedMutable(choice_fn=partial).source_mutables == {a, c}
    method = DerivedMutable(choice_fn=c.dump_chosen)
    assert method.source_mutables == {c}
    pair = [a, {"k": (b,)}]
    listed = DerivedMutable(choice_fn=lambda: sum(m.current_choice for m in pair[:1]))
    assert listed.source_mutables == {a, b}


def test_recursive_closure_does_not_loop():
    mv = MutableValue([1, 2])

    def fn(n=0):
        return mv.current_choice if n else fn(1)

    assert DerivedMutable(choice_fn=fn).source_mutables == {mv}


def test_explicit_sources_and_validation():
    a, b = MutableValue([1, 2]), MutableValue([3, 4])
    derived = DerivedMutable(choice_fn=lambda: 0, source_mutables=[a, b * 2])
    assert derived.source_mutables == {a, b}
    with pytest.raises(ChoiceTypeError):
        DerivedMutable(choice_fn=lambda: 0, source_mutables=[3])
    with pytest.raises(ChoiceTypeError):
        DerivedMutable(choice_fn=3)
    with pytest.raises(ChoiceTypeError):
        DerivedMutable(choice_fn=lambda: 0, mask_fn="mask")


def test_no_sources_means_fixed():
    constant = DerivedMutable(choice_fn=lambda: 7)
    assert constant.source_mutables == set()
    assert constant.is_fixed
    assert repr(constant) == "DerivedMutable(current_choice=7, source_mutables={}, is_fixed=True)"


def test_concat_masks():
    a = SquentialMutableChannel(3)
    b = OneShotMutableChannel(4, candidate_choices=[1, 2, 4])
    s = SimpleMutableChannel(2)
    a.current_choice, b.current_choice = 2, 1
    s.current_choice = torch.tensor([False, True])
    cat = concat_mutable_channels([a, b, s])
    assert cat.current_mask.tolist() == bools("110" + "1000" + "01")
    assert cat.current_choice == 4
    assert cat.source_mutables == {a, b, s}
    # a derived mutable can be concatenated too
    cat2 = concat_mutable_channels([a * 2, b])
    assert cat2.current_mask.tolist() == bools("111100" + "1000")
    assert cat2.source_mutables == {a, b}


def test_concat_bad_inputs():
    with pytest.raises(InvalidChoiceError):
        concat_mutable_channels([])
    with pytest.raises(ChoiceTypeError):
        concat_mutable_channels([MutableValue([1, 2])])
    with pytest.raises(ChoiceTypeError):
        concat_mutable_channels([MutableValue([1, 2]) * 2])
