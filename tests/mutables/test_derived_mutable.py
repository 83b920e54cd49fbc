"""Tests for DerivedMutable, the derivation operators and concat_mutable_channels."""

from __future__ import annotations

import functools

import pytest
import torch

from fxrazor.errors import (
    ChoiceTypeError,
    DerivedMutableError,
    FxRazorError,
    InvalidArgumentError,
    InvalidChoiceError,
)
from fxrazor.mutables.derived_mutable import DerivedMutable, concat_mutable_channels
from fxrazor.mutables.mutable_channel import SimpleMutableChannel, SquentialMutableChannel
from fxrazor.mutables.mutable_value import MutableValue
from fxrazor.mutables.one_shot_channel import OneShotMutableChannel


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


def test_divide_is_floor_division_made_divisible_by_8():
    # MMRazor: derive_divide_mutable(ratio, divisor=8): the width becomes
    # make_divisible(n // r, 8) and the first make_divisible(c // r, 8) are kept.
    # Before, `//` kept the groups of r channels that were all kept, with no divisor.
    mc = SquentialMutableChannel(64)
    for derived in (mc // 2, mc.derive_divide_mutable(2), mc // 2.0):
        for choice, kept in [(64, 32), (40, 24), (20, 16), (6, 8)]:
            # 40 // 2 = 20 -> nearest multiple of 8 is 24 (20 + 4 = 24); 20 // 2 = 10 -> 8,
            # but 8 < 0.9 * 10 so 16; 6 // 2 = 3 -> at least the divisor, 8
            mc.current_choice = choice
            assert derived.num_channels == 32  # make_divisible(64 // 2, 8)
            assert derived.current_choice == kept
            assert derived.current_mask.tolist() == [True] * kept + [False] * (32 - kept)


def test_divide_with_a_divisor_pair():
    mc = SquentialMutableChannel(8)
    derived = mc // (4, 1)  # `m // (ratio, divisor)`: divisor 1 is plain floor division
    for choice, kept in [(8, 2), (7, 1), (4, 1), (3, 1)]:  # at least one channel
        mc.current_choice = choice
        assert derived.current_choice == kept
        assert derived.current_mask.tolist() == [True] * kept + [False] * (2 - kept)
    assert (mc // (4, 8)).num_channels == 8


def test_expand_by_a_float_ratio_keeps_a_prefix():
    # MMRazor: int(n * r) channels, the first int(c * r) kept
    mc = SquentialMutableChannel(4)
    mc.current_choice = 3
    derived = mc * 1.5
    assert derived.num_channels == 6 and derived.current_choice == 4  # int(4.5)
    assert derived.current_mask.tolist() == bools("111100")
    assert (mc * 2.0).current_mask.tolist() == bools("11111100")


def test_channel_times_value_follows_both():
    # MMRazor: SquentialMutableChannel * OneShotMutableValue (either order):
    # int(n * max ratio) channels, the first int(c * current ratio) kept
    from fxrazor.mutables.mutable_value import OneShotMutableValue

    mc = SquentialMutableChannel(4)
    ratio = OneShotMutableValue([1, 2, 3])
    for derived in (mc * ratio, ratio * mc):
        assert derived.source_mutables == {mc, ratio}
        mc.current_choice, ratio.current_choice = 3, 2
        assert derived.num_channels == 12 and derived.current_choice == 6
        assert derived.current_mask.tolist() == bools("111111000000")
        ratio.current_choice = 3
        assert derived.current_choice == 9
    with pytest.raises(ChoiceTypeError, match="mutable channel and a mutable value"):
        MutableValue([1, 2]) * MutableValue([1, 2])  # noqa: B018
    with pytest.raises(ChoiceTypeError):
        mc * SquentialMutableChannel(2)  # noqa: B018


def test_divide_by_a_mutable_reads_it_once():
    from fxrazor.mutables.mutable_value import OneShotMutableValue

    mc = SquentialMutableChannel(16)
    ratio = OneShotMutableValue([2, 4], default_value=4)
    derived = mc // ratio  # MMRazor divides by the value's choice at this moment
    ratio.current_choice = 2
    assert derived.num_channels == 8 and derived.current_choice == 8  # make_divisible(4, 8)


def test_derive_concat_mutable_is_a_static_method():
    a, b = SquentialMutableChannel(2), SquentialMutableChannel(3)
    b.current_choice = 1
    cat = SquentialMutableChannel.derive_concat_mutable([a, b])
    assert cat.current_choice == 3 and cat.current_mask.tolist() == bools("11100")


@pytest.mark.parametrize("ratio, error", [(0, InvalidChoiceError), (-2, InvalidChoiceError),
                                          (0.5, InvalidChoiceError)])
def test_bad_channel_ratios(ratio, error):
    mc = SquentialMutableChannel(6)
    if ratio != 0.5:  # expanding by 0.5 halves, as MMRazor
        with pytest.raises(error):
            mc.derive_expand_mutable(ratio)
    with pytest.raises(error):
        mc.derive_divide_mutable(ratio)


def test_bad_ratio_types():
    mc = SquentialMutableChannel(6)
    with pytest.raises(ChoiceTypeError):
        mc.derive_expand_mutable("2")
    with pytest.raises(ChoiceTypeError):
        MutableValue([1, 2]).derive_divide_mutable(None)
    with pytest.raises(ChoiceTypeError):
        mc // (1, 2, 3)  # noqa: B018
    with pytest.raises(InvalidArgumentError, match="divisor"):
        mc.derive_divide_mutable(2, divisor=0)
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
    nested = (mc * 2) // (4, 1)
    assert nested.source_mutables == {mc}
    mc.current_choice = 2  # mask 1100 -> 11110000 -> 8 // 4 = 2 wide, 4 // 4 = 1 kept
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


def test_choices_enumerate_every_source_combination():
    # MMRazor's DerivedMutable.choices: choice_fn over the product of the sources' choices
    a, b = MutableValue([1, 2]), MutableValue([10, 20], default_value=20)
    both = DerivedMutable(choice_fn=lambda: a.current_choice + b.current_choice)
    assert sorted(both.choices) == [11, 12, 21, 22]
    assert (a.current_choice, b.current_choice) == (1, 20)  # set back
    assert (a * 3).choices == [3, 6]
