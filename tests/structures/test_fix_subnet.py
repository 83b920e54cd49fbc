"""Tests for exporting and loading fixed subnets (fxrazor.structures.subnet)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from fxrazor.errors import (
    AliasConflictError,
    FixedMutableError,
    InvalidArgumentError,
    InvalidChoiceError,
    SubnetConfigError,
)
from fxrazor.mutables.base import BaseMutable, DumpChosen
from fxrazor.structures.subnet import (
    convert_fix_subnet,
    export_fix_subnet,
    load_fix_subnet,
    save_fix_subnet,
)


class Pick(BaseMutable):
    """A minimal mutable: scales its input by the chosen factor."""

    def __init__(self, choices: list[Any], alias: str | None = None) -> None:
        super().__init__(alias=alias)
        self.choices = list(choices)
        self._choice = self.choices[0]
        self.fixed_with: list[Any] = []

    @property
    def current_choice(self) -> Any:
        return self._choice

    @current_choice.setter
    def current_choice(self, choice: Any) -> None:
        self._choice = choice

    def fix_chosen(self, chosen: Any) -> None:
        if self.is_fixed:
            raise FixedMutableError("already fixed")
        self.fixed_with.append(chosen)
        self._choice = chosen
        self.choices = [chosen]
        self.is_fixed = True

    def dump_chosen(self) -> DumpChosen:
        return DumpChosen(self._choice, {"all_choices": list(self.choices)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._choice


class NotSource(Pick):
    is_source_mutable = False


class MaskPick(Pick):
    """A mutable whose choice is a bool tensor, like a channel mask."""

    def __init__(self) -> None:
        super().__init__([torch.tensor([True, True, True])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self._choice]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = Pick([1, 2, 3])
        self.block = nn.Sequential(nn.Linear(3, 3), Pick([4, 5]))
        self.shared1 = Pick([6, 7], alias="width")
        self.shared2 = Pick([6, 7], alias="width")
        self.follower = NotSource([0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared2(self.shared1(self.block(self.a(x))))


def _choose(net: Net) -> None:
    net.a.current_choice = 3
    net.block[1].current_choice = 5
    net.shared1.current_choice = 7
    net.shared2.current_choice = 7


EXPECTED = {
    "a": {"chosen": 3, "meta": {"all_choices": [1, 2, 3]}},
    "block.1": {"chosen": 5, "meta": {"all_choices": [4, 5]}},
    "width": {"chosen": 7, "meta": {"all_choices": [6, 7]}},
}


def test_export_keys_by_alias_or_name_and_skips_non_source():
    net = Net()
    _choose(net)
    assert export_fix_subnet(net) == (EXPECTED, None)
    assert net.a.current_choice == 3 and not net.a.is_fixed  # model untouched


def test_export_rejects_disagreeing_aliases():
    net = Net()
    net.shared1.current_choice = 6
    net.shared2.current_choice = 7
    with pytest.raises(AliasConflictError, match="shared1.*shared2.*width"):
        export_fix_subnet(net)


def test_export_makes_tensors_plain_and_is_json_able():
    net = nn.Sequential(MaskPick())
    net[0].current_choice = torch.tensor([True, False, True])
    cfg, _ = export_fix_subnet(net)
    assert cfg == {"0": {"chosen": [True, False, True], "meta": {"all_choices": [[True] * 3]}}}
    assert json.loads(json.dumps(cfg)) == cfg


def test_export_rejects_unplain_choice():
    net = nn.Sequential(Pick([nn.ReLU()]))
    with pytest.raises(InvalidArgumentError, match="ReLU"):
        export_fix_subnet(net)


def test_load_fixes_every_source_mutable():
    net = Net()
    load_fix_subnet(net, EXPECTED)
    assert net.a.fixed_with == [3]
    assert net.block[1].fixed_with == [5]
    assert net.shared1.fixed_with == [7] and net.shared2.fixed_with == [7]
    assert net.follower.fixed_with == []  # not a source mutable
    # x * 3 -> Linear -> * 5 * 7 * 7
    x = torch.randn(2, 3)
    torch.testing.assert_close(net(x), net.block[0](x * 3) * 5 * 49)


def test_load_accepts_bare_values_and_dump_chosen():
    net = Net()
    load_fix_subnet(net, {"a": 2, "block.1": DumpChosen(4), "width": {"chosen": 6}})
    assert [net.a.current_choice, net.block[1].current_choice, net.shared1.current_choice] == [
        2,
        4,
        6,
    ]


def test_load_lists_all_missing_and_extra_mutables():
    cfg = {"a": 1, "width": 6, "ghost": 1, "block.9": 2}
    net = Net()
    with pytest.raises(SubnetConfigError) as info:
        load_fix_subnet(net, cfg)
    message = str(info.value)
    assert "['block.1']" in message  # missing from the config
    assert "['ghost', 'block.9']" in message  # absent from the model
    assert not net.a.is_fixed  # nothing was fixed before the check


def test_load_with_prefix_and_extra_prefix():
    # MMRazor: `prefix` is taken off the model's module names and `extra_prefix` put in
    # front of them (before, both were applied to the config keys: the other direction)
    wrapped = nn.Module()
    wrapped.architecture = Net()
    load_fix_subnet(wrapped, {"a": 1, "block.1": 4, "width": 6}, prefix="architecture.")
    assert (wrapped.architecture.a.current_choice, wrapped.architecture.block[1].current_choice
            ) == (1, 4)

    # a backbone loads the config of a whole model: its names get "backbone." in front
    exported = {"backbone.a": 2, "backbone.block.1": 5, "width": 7}
    net = Net()
    load_fix_subnet(net, exported, extra_prefix="backbone.")  # aliases take no prefix
    assert (net.a.current_choice, net.block[1].current_choice) == (2, 5)
    assert net.shared2.current_choice == 7
    with pytest.raises(SubnetConfigError, match=r"\['a', 'block.1'\]"):
        load_fix_subnet(Net(), exported)


def test_prefix_collision_is_reported():
    net = nn.Module()
    net.p = nn.Module()
    net.p.a = Pick([1, 2])
    net.a = Pick([1, 2])
    with pytest.raises(SubnetConfigError, match="both read config key 'a'"):
        load_fix_subnet(net, {"a": 1}, prefix="p.")
    assert not net.a.is_fixed


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_file_round_trip(tmp_path, suffix):
    net = Net()
    _choose(net)
    path = save_fix_subnet(export_fix_subnet(net)[0], tmp_path / f"subnet{suffix}")
    text = path.read_text()
    loaded = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    assert loaded == EXPECTED
    fresh = Net()
    load_fix_subnet(fresh, path)
    load_fix_subnet(Net(), str(path))  # str paths work too
    assert (fresh.a.current_choice, fresh.block[1].current_choice) == (3, 5)
    assert fresh.shared1.is_fixed and fresh.shared2.current_choice == 7


def test_tensor_choice_survives_a_yaml_round_trip(tmp_path):
    net = nn.Sequential(MaskPick())
    net[0].current_choice = torch.tensor([False, True, True])
    path = save_fix_subnet(export_fix_subnet(net)[0], tmp_path / "mask.yaml")
    fresh = nn.Sequential(MaskPick())
    load_fix_subnet(fresh, path)
    chosen = fresh[0].current_choice
    assert isinstance(chosen, torch.Tensor) and chosen.dtype == torch.bool
    assert chosen.tolist() == [False, True, True]


@pytest.mark.parametrize("name", ["subnet.txt", "subnet", "subnet.pth"])
def test_unknown_suffix_is_rejected(tmp_path, name):
    path = tmp_path / name
    path.write_text("a: 1\n")
    with pytest.raises(SubnetConfigError, match="suffix"):
        load_fix_subnet(Net(), path)
    with pytest.raises(SubnetConfigError, match="suffix"):
        save_fix_subnet({}, path)


def test_bad_files_are_reported(tmp_path):
    with pytest.raises(SubnetConfigError, match="cannot read"):
        load_fix_subnet(Net(), tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(SubnetConfigError, match="list"):
        load_fix_subnet(Net(), tmp_path / "list.yaml")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SubnetConfigError, match="not valid"):
        load_fix_subnet(Net(), tmp_path / "broken.json")


def test_bad_modes_are_rejected():
    with pytest.raises(InvalidArgumentError, match="export_subnet_mode.*'mutator'"):
        export_fix_subnet(Net(), export_subnet_mode="weights")
    with pytest.raises(InvalidArgumentError, match="load_subnet_mode"):
        load_fix_subnet(Net(), {}, load_subnet_mode="weights")
    with pytest.raises(InvalidArgumentError, match="channel units"):
        export_fix_subnet(Net(), export_subnet_mode="mutator")
    with pytest.raises(InvalidArgumentError, match="_fxr_load_subnet"):
        load_fix_subnet(Net(), {}, load_subnet_mode="mutator")


def test_prefix_and_extra_prefix_together_are_refused():
    net = Net()
    with pytest.raises(InvalidArgumentError, match="prefix"):
        load_fix_subnet(net, EXPECTED, prefix="a.", extra_prefix="b.")
    assert not net.a.is_fixed


def test_refused_choice_fixes_nothing():
    # Pick.fix_chosen cannot fail, so make the choice refused at `current_choice`.
    from fxrazor.mutables.mutable_value import MutableValue

    net = nn.Module()
    net.first = MutableValue([1, 2])
    net.second = MutableValue([3, 4])
    with pytest.raises(InvalidChoiceError, match="9"):
        load_fix_subnet(net, {"first": 2, "second": 9})
    assert not net.first.is_fixed and net.first.current_choice == 1  # set back
    assert not net.second.is_fixed
    load_fix_subnet(net, {"first": 2, "second": 4})
    assert net.first.is_fixed and net.second.choices == [4]


class OpPick(Pick):
    """Holds its candidate layers; fixing drops the unchosen ones (like a choice block)."""

    def __init__(self) -> None:
        super().__init__(["small", "big"])
        self.ops = nn.ModuleDict({"small": nn.Linear(2, 2), "big": nn.Linear(2, 8)})

    def fix_chosen(self, chosen: Any) -> None:
        super().fix_chosen(chosen)
        for name in [n for n in self.ops if n != chosen]:
            del self.ops[name]


def test_slice_weight_returns_a_fixed_copy_of_the_model():
    # MMRazor returns (fix_subnet, copied_model): the model, not its state_dict
    model = nn.Sequential(OpPick())
    model[0].current_choice = "big"
    cfg, static = export_fix_subnet(model, slice_weight=True)
    assert cfg == {"0": {"chosen": "big", "meta": {"all_choices": ["small", "big"]}}}
    assert isinstance(static, nn.Sequential) and static is not model
    state = static.state_dict()
    assert set(state) == {"0.ops.big.weight", "0.ops.big.bias"}
    torch.testing.assert_close(state["0.ops.big.weight"], model[0].ops["big"].weight)
    # the original keeps every candidate and stays searchable
    assert set(model.state_dict()) == {
        f"0.ops.{n}.{p}" for n in ("small", "big") for p in ("weight", "bias")
    }
    assert not model[0].is_fixed
    assert export_fix_subnet(model)[1] is None


def test_protocol_methods_serve_the_mutator_form():
    class Compiled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.loaded: list[dict] = []
            self.inner = Pick([1, 2])

        def _fxr_dump_subnet(self) -> dict:
            return {"units": {"conv1": DumpChosen(0.5, None), "mask": torch.tensor([1, 0])}}

        def _fxr_load_subnet(self, cfg: dict) -> None:
            self.loaded.append(cfg)

    model = Compiled()
    cfg, _ = export_fix_subnet(model, export_subnet_mode="mutator")
    assert cfg == {"units": {"conv1": {"chosen": 0.5, "meta": None}, "mask": [1, 0]}}
    # the 'mutable' form dumps the mutables, whatever the model defines
    assert export_fix_subnet(model)[0] == {"inner": {"chosen": 1, "meta": {"all_choices": [1, 2]}}}
    load_fix_subnet(model, cfg, load_subnet_mode="mutator")
    assert model.loaded == [cfg]
    assert not model.inner.is_fixed


def test_convert_fix_subnet():
    raw = {
        "op": DumpChosen("conv", {"all_choices": ("conv", "pool")}),
        "mask": {"chosen": torch.tensor([True, False])},
        "value": 3,
        "nested": {"ks": (3, 5)},
    }
    assert convert_fix_subnet(raw) == {
        "op": {"chosen": "conv", "meta": {"all_choices": ["conv", "pool"]}},
        "mask": {"chosen": [True, False], "meta": None},
        "value": 3,
        "nested": {"ks": [3, 5]},
    }
    assert isinstance(raw["mask"]["chosen"], torch.Tensor)  # input not modified
    with pytest.raises(InvalidArgumentError, match="op"):
        convert_fix_subnet({"op": object()})


# ---------------------------------------------------------------- with fxrazor's own mutables


class RealNet(nn.Module):
    """A stem choice block, a shared width value with a derived follower, and channels."""

    def __init__(self) -> None:
        from fxrazor.mutables.channel_container import MutableChannelContainer
        from fxrazor.mutables.mutable_channel import SimpleMutableChannel, SquentialMutableChannel
        from fxrazor.mutables.mutable_module import OneShotMutableOP
        from fxrazor.mutables.mutable_value import OneShotMutableValue

        super().__init__()
        self.op = OneShotMutableOP(
            {"conv3": nn.Conv2d(2, 2, 3, padding=1), "conv5": nn.Conv2d(2, 2, 5, padding=2)}
        )
        self.width = OneShotMutableValue([2, 4, 6], alias="expand")
        self.width_again = OneShotMutableValue([2, 4, 6], alias="expand")
        self.doubled = self.width * 2  # a DerivedMutable: not exported
        self.mask = SimpleMutableChannel(3)
        self.channels = SquentialMutableChannel(4)
        self.container = MutableChannelContainer(4)  # follows registered channels
        self.container.register_mutable(self.channels, 0, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x) * self.width.current_choice


def test_real_mutables_round_trip_through_yaml(tmp_path):
    torch.manual_seed(0)
    net = RealNet()
    net.op.current_choice = "conv5"
    net.width.current_choice = net.width_again.current_choice = 4
    net.mask.current_choice = torch.tensor([True, False, True])
    net.channels.current_choice = 3
    cfg, _ = export_fix_subnet(net)
    assert set(cfg) == {"op", "expand", "mask", "channels"}
    assert cfg["op"] == {"chosen": "conv5", "meta": {"all_choices": ["conv3", "conv5"]}}
    assert cfg["expand"]["chosen"] == 4
    assert cfg["mask"]["chosen"] == [True, False, True]
    assert cfg["channels"]["chosen"] == 3

    x = torch.randn(1, 2, 5, 5)
    expected = net(x)
    fresh = copy.deepcopy(net)
    fresh.op.current_choice = "conv3"  # loading must override these
    fresh.width.current_choice = fresh.width_again.current_choice = 2
    load_fix_subnet(fresh, save_fix_subnet(cfg, tmp_path / "subnet.yaml"))
    assert fresh.op.is_fixed and fresh.op.choices == ["conv5"]
    assert fresh.width.choices == [4] and fresh.width_again.current_choice == 4
    assert fresh.doubled.current_choice == 8
    assert fresh.mask.current_choice.tolist() == [True, False, True]
    assert fresh.channels.activated_channels == 3
    assert not fresh.container.is_fixed  # containers are left to their sources
    torch.testing.assert_close(fresh(x), expected)


def test_real_mutables_reject_invalid_choice_from_config():
    from fxrazor.errors import InvalidChoiceError

    net = RealNet()
    cfg, _ = export_fix_subnet(net)
    cfg["op"]["chosen"] = "conv9"
    with pytest.raises(InvalidChoiceError, match="conv9"):
        load_fix_subnet(net, cfg)


def test_diff_mutable_op_exports_and_fixes():
    from fxrazor.mutables.diff_mutable import DiffMutableOP

    model = nn.Sequential(DiffMutableOP({"relu": nn.ReLU(), "id": nn.Identity()}))
    model[0].current_choice = "id"
    cfg, _ = export_fix_subnet(model)
    assert cfg == {"0": {"chosen": "id", "meta": {"all_choices": ["relu", "id"]}}}
    fresh = nn.Sequential(DiffMutableOP({"relu": nn.ReLU(), "id": nn.Identity()}))
    load_fix_subnet(fresh, cfg)
    assert fresh[0].is_fixed and fresh[0].choices == ["id"]
