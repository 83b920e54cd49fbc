"""The mutators on their own: ChannelMutator over a supernet's units, NasMutator (and
DiffModuleMutator) over any model's op mutables and given value mutables."""

from __future__ import annotations

import random

import pytest
import torch
from search_models import search_supernet
from small_models import conv_bn_chain
from torch import nn

import fxrazor
from fxrazor.errors import (
    FxRazorError,
    InvalidChoiceError,
    SubnetConfigError,
    UnknownUnitError,
    UnsupportedModelError,
)
from fxrazor.mutables import (
    DiffChoiceRoute,
    MutableValue,
    OneHotMutableOP,
    OneShotMutableOP,
    OneShotMutableValue,
)
from fxrazor.mutators.channel_mutator import ChannelMutator, OneShotChannelMutator
from fxrazor.mutators.nas_mutator import DiffModuleMutator, NasMutator


def test_channel_mutator_choices_and_config_template() -> None:
    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x)
    mutator = OneShotChannelMutator()
    mutator.prepare_from_supernet(sn)
    assert mutator.search_groups == {"0": [sn.unit("0")], "3": [sn.unit("3")]}
    assert (mutator.max_choices, mutator.min_choices) == ({"0": 8, "3": 6}, {"0": 1, "3": 1})
    mutator.set_min_choices()
    assert sn.choices() == {"0": 1, "3": 1}
    mutator.set_max_choices()
    template = mutator.config_template(with_unit_init_args=True)
    assert template["type"] == "OneShotChannelMutator"
    assert template["channel_unit_cfg"]["type"] == "SequentialMutableChannelUnit"
    unit_cfg = template["channel_unit_cfg"]["units"]["0"]
    assert unit_cfg["choice"] == 8 and unit_cfg["init_args"]["num_channels"] == 8
    with pytest.raises(InvalidChoiceError):
        mutator.set_choices({"0": 3, "3": 60})
    assert mutator.current_choices == {"0": 8, "3": 6}
    with pytest.raises(UnknownUnitError, match="'9'.*'0'"):
        mutator.set_choices({"9": 1})
    with pytest.raises(UnsupportedModelError):
        ChannelMutator().prepare_from_supernet(nn.Linear(2, 2))
    with pytest.raises(FxRazorError, match="prepare_from_supernet"):
        ChannelMutator().current_choices  # noqa: B018


def test_unit_driven_by_a_value_is_not_searched_nor_settable() -> None:
    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x)
    unit = sn.unit("3")
    width = OneShotMutableValue([2, 6])
    unit.__dict__["driven_by"] = width  # what value binding does (with is_mutable False)
    sn.__dict__["_fxr_value_mutables"] = {"3.width": width}
    assert sn.choices() == {"0": 8, "3": 6, "3.width": 6}  # (binding also unsets is_mutable)
    with pytest.raises(InvalidChoiceError, match=r"\['3'\].*value"):
        sn.set_choices({"0": 2, "3": 4})
    assert sn.choices()["0"] == 8


def test_nas_mutator_on_a_plain_model() -> None:
    model = nn.Sequential(
        OneShotMutableOP({"id": nn.Identity(), "fc": nn.Linear(4, 4)}),
        OneHotMutableOP({"relu": nn.ReLU(), "tanh": nn.Tanh()}),
        OneShotMutableOP({"id": nn.Identity(), "fc": nn.Linear(4, 4)}, alias="tail"))
    values = {"depth": MutableValue([2, 4, 3]), "ratio": OneShotMutableValue([0.5, 1.0])}
    mutator = NasMutator()
    with pytest.raises(FxRazorError, match="prepare_from_supernet"):
        mutator.search_groups  # noqa: B018
    mutator.prepare_from_supernet(model, values)
    assert list(mutator.search_groups) == ["0", "1", "tail", "depth", "ratio"]
    with pytest.raises(FxRazorError, match="prepare_arch_params"):
        mutator.arch_params  # noqa: B018
    # without arch params a differentiable group has no max choice
    with pytest.raises(InvalidChoiceError, match="'1'.*prepare_arch_params"):
        mutator.sample_choices("max")
    mutator.prepare_arch_params()
    with torch.no_grad():
        mutator.arch_param("1").copy_(torch.tensor([-1.0, 1.0]))
    # a plain MutableValue has no max/min of its own: its largest/smallest value
    assert mutator.max_choices == {"0": "fc", "1": "tanh", "tail": "fc", "depth": 4,
                                   "ratio": 1.0}
    assert mutator.min_choices == {"0": "id", "1": "tanh", "tail": "id", "depth": 2,
                                   "ratio": 0.5}
    model.eval()  # a one-hot op runs its argmax in eval mode
    x = torch.tensor([[-1.0, 0.0, 1.0, 2.0]])
    mutator.set_choices({"0": "id", "tail": "id"})
    torch.testing.assert_close(model(x), torch.tanh(x))
    with pytest.raises(UnknownUnitError, match="no arch param"):
        mutator.arch_param("0")
    random.seed(0)
    assert mutator.sample_choices()["depth"] in (2, 3, 4)


def test_diff_module_mutator_prepares_arch_params() -> None:
    route = DiffChoiceRoute({"a": nn.Identity(), "b": nn.Identity(), "c": nn.Identity()})
    mutator = DiffModuleMutator()
    mutator.prepare_from_supernet(nn.ModuleDict({"cell": nn.ModuleDict({"node": route})}))
    assert list(mutator.arch_params) == ["cell:node"]
    with torch.no_grad():
        mutator.arch_param("cell.node").copy_(torch.tensor([3.0, 1.0, 2.0]))
    assert mutator.max_choices == {"cell.node": ["a", "c"]}  # two best, in edge order
    torch.manual_seed(0)
    drawn = [tuple(mutator.sample_choices()["cell.node"]) for _ in range(20)]
    assert all(len(set(d)) == 2 for d in drawn) and len(set(drawn)) > 1
    # re-preparing keeps a trained arch param
    mutator.prepare_arch_params(mutator.arch_params)
    assert mutator.arch_param("cell.node").tolist() == [3.0, 1.0, 2.0]


def test_value_without_order_has_no_max() -> None:
    mutator = NasMutator()
    mutator.prepare_from_supernet(nn.Identity(), {"act": MutableValue([{"k": 1}, {"k": 2}])})
    with pytest.raises(InvalidChoiceError, match="'act'.*no order"):
        mutator.sample_choices("min")


def test_subnet_config_round_trip_with_op_and_value_choices() -> None:
    sn, x = search_supernet()
    sn.set_choices({"stem": 3, "shared": "id", "route": ["conv", "pool"], "head.width": 4})
    config, static = fxrazor.export_fix_subnet(sn)  # MMRazor's (fix_subnet, static_model)
    assert static is None  # no slice_weight
    # MMRazor's 'mutable' form: an alias group under its alias, other mutables under their
    # module path; the value mutables under the supernet's value_mutable_dict, one entry
    # for the kernel recorded under two keys
    assert config["shared"] == {"chosen": "id",
                                "meta": {"all_choices": ["conv3x3", "conv1x1", "id"]}}
    assert config["graph_module.route"] == {
        "chosen": ["conv", "pool"], "meta": {"all_choices": ["skip", "conv", "pool"]}}
    assert config["value_mutable_dict.head:width"] == {"chosen": 4,
                                                       "meta": {"all_choices": [4, 8]}}
    assert config["value_mutable_dict.solo:kernel_size"]["chosen"] == 7
    assert "value_mutable_dict.dop:kernel_size" not in config
    other, _ = search_supernet(1)
    fxrazor.load_fix_subnet(other, config)
    # loading fixes every choice (MMRazor): nothing is left to search
    assert other.choices() == {}
    gm = other.graph_module
    assert [u.activated_channels for u in other.all_units] == [3, 16, 8]
    assert [gm.get_submodule(p).current_choice for p in ("op1", "op2", "solo", "dop")] == [
        "id", "id", "pool", "id"]
    assert gm.route.current_choice == ["conv", "pool"] and gm.route.is_fixed
    values = other.__dict__["_fxr_value_mutables"]
    assert values["head.width"].current_choice == 4 and values["head.width"].is_fixed
    assert values["solo.kernel_size"].current_choice == 7
    del config["shared"]
    with pytest.raises(SubnetConfigError, match="'shared'"):
        fxrazor.load_fix_subnet(search_supernet(2)[0], config)
