"""Tests for MutableChannelContainer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fxrazor.errors import (
    ChoiceTypeError,
    DerivedMutableError,
    IndexOverlapError,
    InvalidChoiceError,
    UnsupportedModelError,
)
from fxrazor.mutables.channel_container import MutableChannelContainer
from fxrazor.mutables.derived_mutable import DerivedMutable
from fxrazor.mutables.mutable_channel import SimpleMutableChannel, SquentialMutableChannel
from fxrazor.mutables.mutable_value import MutableValue


def bools(s: str) -> list[bool]:
    """'1100' -> [True, True, False, False]: expected masks written by hand."""
    return [c == "1" for c in s]


def seq(n: int, choice: int) -> SquentialMutableChannel:
    mc = SquentialMutableChannel(n)
    mc.current_choice = choice
    return mc


def test_empty_container_keeps_everything():
    container = MutableChannelContainer(4)
    assert container.current_mask.tolist() == bools("1111")
    assert container.activated_channels == 4
    assert container.mutable_channels == {}


def test_masks_in_order_with_gaps_kept():
    container = MutableChannelContainer(10)
    b, a = seq(3, 1), seq(2, 1)
    container.register_mutable(b, 6, 9)
    container.register_mutable(a, 1, 3)
    assert list(container.mutable_channels) == [(1, 3), (6, 9)]
    assert container.mutable_channels[(6, 9)] is b
    # 0 | a: 10 | 3..5 | b: 100 | 9
    assert container.current_mask.tolist() == bools("1" + "10" + "111" + "100" + "1")
    assert container.current_choice.tolist() == container.current_mask.tolist()
    b.current_choice = 3
    assert container.current_mask.tolist() == bools("1" + "10" + "111" + "111" + "1")
    assert container.activated_channels == 9


def test_full_cover_and_simple_masks():
    container = MutableChannelContainer(5)
    s = SimpleMutableChannel(2)
    s.current_choice = torch.tensor([False, True])
    container.register_mutable(seq(3, 2), 0, 3)
    container.register_mutable(s, 3, 5)
    assert container.current_mask.tolist() == bools("110" + "01")


def test_derived_mutables_can_be_registered():
    mc = seq(2, 1)
    container = MutableChannelContainer(4)
    container.register_mutable(mc * 2, 0, 4)
    assert container.current_mask.tolist() == bools("1100")
    mc.current_choice = 2
    assert container.current_mask.tolist() == bools("1111")


@pytest.mark.parametrize("start, end", [(-1, 2), (3, 6), (2, 2), (4, 3)])
def test_range_outside_container(start, end):
    container = MutableChannelContainer(5)
    with pytest.raises(IndexOverlapError, match=r"\[0, 5\)"):
        container.register_mutable(seq(max(end - start, 1), 1), start, end)


def test_range_length_must_match():
    container = MutableChannelContainer(5)
    with pytest.raises(IndexOverlapError, match="has 2"):
        container.register_mutable(seq(2, 1), 0, 3)


@pytest.mark.parametrize("start, end", [(2, 4), (3, 5), (1, 6), (4, 5), (2, 3)])
def test_overlap_names_both_ranges(start, end):
    container = MutableChannelContainer(8)
    container.register_mutable(seq(3, 1), 2, 5)
    with pytest.raises(IndexOverlapError, match=rf"\[{start}, {end}\).*\[2, 5\)"):
        container.register_mutable(seq(end - start, 1), start, end)
    assert list(container.mutable_channels) == [(2, 5)]


def test_adjacent_ranges_do_not_overlap():
    container = MutableChannelContainer(6)
    container.register_mutable(seq(3, 1), 0, 3)
    container.register_mutable(seq(3, 2), 3, 6)
    assert container.current_mask.tolist() == bools("100110")


def test_bad_registration_types():
    container = MutableChannelContainer(4)
    with pytest.raises(ChoiceTypeError):
        container.register_mutable(MutableValue([1, 2]), 0, 2)
    with pytest.raises(ChoiceTypeError):
        container.register_mutable(MutableValue([1, 2]) * 2, 0, 2)
    with pytest.raises(ChoiceTypeError):
        container.register_mutable(seq(2, 1), 0.0, 2)


def test_mask_length_change_is_reported():
    lengths = {"n": 2}
    derived = DerivedMutable(
        choice_fn=lambda: 0, mask_fn=lambda: torch.ones(lengths["n"], dtype=torch.bool)
    )
    container = MutableChannelContainer(2)
    container.register_mutable(derived, 0, 2)
    lengths["n"] = 3
    with pytest.raises(IndexOverlapError, match="must stay 2"):
        container.current_mask  # noqa: B018


def test_choice_cannot_be_set_and_fix():
    container = MutableChannelContainer(4)
    with pytest.raises(DerivedMutableError, match="registered mutables"):
        container.current_choice = torch.ones(4, dtype=torch.bool)
    with pytest.raises(DerivedMutableError):
        container.fix_chosen(torch.ones(4, dtype=torch.bool))
    container.fix_chosen()
    assert container.is_fixed


def test_repr():
    container = MutableChannelContainer(4)
    container.register_mutable(seq(2, 1), 0, 2)
    assert repr(container) == (
        "MutableChannelContainer(name=unbind, num_channels=4, activated_channels=3, "
        "registered=[[0, 2)])"
    )


class _Op(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.mutable_attrs = nn.ModuleDict(
            {
                "in_channels": MutableChannelContainer(c_in),
                "out_channels": MutableChannelContainer(c_out),
            }
        )


def test_register_to_module_output_and_input():
    op = _Op(4, 6)
    out_mc, in_mc = seq(6, 2), seq(2, 1)
    MutableChannelContainer.register_mutable_channel_to_module(op, out_mc)
    MutableChannelContainer.register_mutable_channel_to_module(
        op, in_mc, is_to_output_channel=False, start=2
    )
    assert op.mutable_attrs["out_channels"].current_mask.tolist() == bools("110000")
    assert op.mutable_attrs["in_channels"].mutable_channels == {(2, 4): in_mc}
    assert op.mutable_attrs["in_channels"].current_mask.tolist() == bools("1110")
    with pytest.raises(IndexOverlapError):
        MutableChannelContainer.register_mutable_channel_to_module(op, seq(3, 1), start=1, end=4)


def test_register_to_module_via_getter():
    class WithGetter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.out_container = MutableChannelContainer(3)

        def get_mutable_attr(self, key: str):
            return self.out_container if key == "out_channels" else None

    op = WithGetter()
    MutableChannelContainer.register_mutable_channel_to_module(op, seq(3, 1))
    assert op.out_container.current_mask.tolist() == bools("100")
    with pytest.raises(UnsupportedModelError, match="in_channels"):
        MutableChannelContainer.register_mutable_channel_to_module(
            op, seq(3, 1), is_to_output_channel=False
        )


def test_register_to_module_without_container():
    with pytest.raises(UnsupportedModelError, match="mutable_attrs"):
        MutableChannelContainer.register_mutable_channel_to_module(nn.Linear(2, 3), seq(3, 1))
    op = nn.Linear(2, 3)
    op.mutable_attrs = {"out_channels": nn.Identity()}
    with pytest.raises(UnsupportedModelError):
        MutableChannelContainer.register_mutable_channel_to_module(op, seq(3, 1))


def test_channel_specs_from_a_source_are_built_once_on_first_use() -> None:
    from fxrazor.mutables.channel_unit import SequentialMutableChannelUnit

    unit = SequentialMutableChannelUnit(2)
    calls = []

    def source():
        calls.append(1)
        return [{"name": "a"}], [{"name": "b"}]

    unit.set_channel_specs_source(source)
    assert calls == []
    unit.output_related = [{"name": "c"}]  # keeps the source's input side
    assert (unit.output_related, unit.input_related) == ([{"name": "c"}], [{"name": "b"}])
    assert unit.config_template(with_channels=True)["channels"]["input_related"] == [
        {"name": "b"}]
    assert calls == [1]


def test_unit_pickled_with_plain_channel_spec_attributes_still_loads() -> None:
    from fxrazor.mutables.channel_unit import SequentialMutableChannelUnit

    state = SequentialMutableChannelUnit(3).__getstate__()
    del state["_related"]  # the layout of units saved before the specs became lazy
    state["output_related"], state["input_related"] = [{"name": "a"}], [{"name": "b"}]
    unit = SequentialMutableChannelUnit.__new__(SequentialMutableChannelUnit)
    unit.__setstate__(state)
    assert (unit.output_related, unit.input_related) == ([{"name": "a"}], [{"name": "b"}])
    assert unit.num_channels == 3


@pytest.mark.parametrize("cls", ["MutableChannelUnit", "SequentialMutableChannelUnit",
                                 "OneShotMutableChannelUnit"])
def test_units_name_a_bad_width_and_take_a_fitting_channel_mutable(cls: str) -> None:
    from fxrazor import mutables
    from fxrazor.mutables.mutable_channel import SquentialMutableChannel
    from fxrazor.mutables.one_shot_channel import OneShotMutableChannel

    unit_cls = getattr(mutables, cls)
    for bad in (0, 2.0, True):
        with pytest.raises(InvalidChoiceError, match="num_channels must be a positive int"):
            unit_cls(bad)
    unit = unit_cls(4)
    expected = OneShotMutableChannel if cls.startswith("OneShot") else SquentialMutableChannel
    assert type(unit.mutable_channel) is expected and unit.mutable_channel.num_channels == 4
    assert [name for name, _ in unit.named_modules()] == ["", "mutable_channel"]
    given = SquentialMutableChannel(4)
    assert mutables.MutableChannelUnit(4, mutable_channel=given).mutable_channel is given
    with pytest.raises(InvalidChoiceError, match="mutable_channel has 3 channels"):
        mutables.MutableChannelUnit(4, mutable_channel=SquentialMutableChannel(3))
