"""export_fix_subnet / load_fix_subnet on a converted supernet: the (config, static model)
pair, the two export forms and loading that fixes the units."""

from __future__ import annotations

import pytest
import torch
from oracles import assert_close
from small_models import conv_bn_chain
from torch import fx, nn

import fxrazor
from fxrazor.errors import FixedMutableError, InvalidChoiceError, SubnetConfigError


def _supernet() -> tuple[fxrazor.Supernet, torch.Tensor, nn.Module]:
    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x)
    sn.set_choices({"0": 3, "3": 5})
    return sn, x, model


def test_slice_weight_gives_the_frozen_subnet_with_sliced_weights() -> None:
    sn, x, model = _supernet()
    cfg, static = fxrazor.export_fix_subnet(sn, slice_weight=True)
    # before: a state_dict of a deep copy, with the full 8- and 6-channel weights
    assert isinstance(static, fx.GraphModule)
    assert static.get_submodule("0").weight.shape == (3, 3, 3, 3)
    assert static.get_submodule("3").weight.shape == (5, 3, 3, 3)
    assert static.get_submodule("6").weight.shape == (2, 5, 1, 1)
    with torch.no_grad():
        assert_close(static(x), sn(x), rtol=0, atol=0)  # frozen == supernet
    assert sn.choices() == {"0": 3, "3": 5}  # the supernet is untouched and searchable
    assert not any(u.is_fixed for u in sn.every_unit())
    assert fxrazor.export_fix_subnet(sn) == (cfg, None)  # None without slice_weight


def test_mutable_form_dumps_each_units_mutable_channel() -> None:
    sn, _, _ = _supernet()
    cfg, _ = fxrazor.export_fix_subnet(sn)  # export_subnet_mode='mutable'
    assert cfg == {
        "all_units.0.mutable_channel": {"chosen": 3, "meta": {"max_channels": 8}},
        "all_units.1.mutable_channel": {"chosen": 5, "meta": {"max_channels": 6}},
    }


def test_mutator_form_dumps_every_units_config_template() -> None:
    sn, _, _ = _supernet()
    cfg, _ = fxrazor.export_fix_subnet(sn, export_subnet_mode="mutator")
    init = {"choice_mode": "number", "divisor": 1, "min_value": 1, "min_ratio": 0.9}
    assert cfg == {
        "0": {"init_args": {"num_channels": 8, **init}, "choice": 3},
        "3": {"init_args": {"num_channels": 6, **init}, "choice": 5},
    }
    with_channels, _ = fxrazor.export_fix_subnet(sn, "mutator", export_channel=True)
    assert with_channels["0"]["channels"]["output_related"] == [
        {"name": "0", "start": 0, "end": 8, "expand_ratio": 1, "is_output_channel": True},
        {"name": "1", "start": 0, "end": 8, "expand_ratio": 1, "is_output_channel": True},
    ]
    assert [c["name"] for c in with_channels["3"]["channels"]["input_related"]] == ["6"]


@pytest.mark.parametrize("mode", ["mutable", "mutator"])
def test_load_sets_the_choices_and_fixes_the_units(mode: str) -> None:
    sn, x, model = _supernet()
    cfg, _ = fxrazor.export_fix_subnet(sn, export_subnet_mode=mode)
    other = fxrazor.convert(model, x)
    fxrazor.load_fix_subnet(other, cfg, load_subnet_mode=mode)
    # before: the choices were set but the units stayed searchable
    assert [(u.current_choice, u.is_fixed) for u in other.every_unit()] == [(3, True), (5, True)]
    assert other.choices() == {}  # no searchable unit is left
    with pytest.raises(FixedMutableError):
        other.unit("0").current_choice = 4
    with torch.no_grad():
        assert_close(fxrazor.freeze(other)(x), fxrazor.freeze(sn)(x), rtol=0, atol=0)
    # exporting the fixed supernet gives the same config again
    assert fxrazor.export_fix_subnet(other, export_subnet_mode=mode)[0] == cfg


@pytest.mark.parametrize(("mode", "cfg", "error"), [
    ("mutator", {"0": {"choice": 3}, "3": {"choice": 60}}, SubnetConfigError),
    ("mutable", {"all_units.0.mutable_channel": 3, "all_units.1.mutable_channel": 60},
     InvalidChoiceError),
])
def test_a_refused_choice_fixes_nothing(mode: str, cfg: dict, error: type) -> None:
    sn, _, _ = _supernet()
    with pytest.raises(error):
        fxrazor.load_fix_subnet(sn, cfg, load_subnet_mode=mode)
    assert sn.choices() == {"0": 3, "3": 5}
    assert not any(u.is_fixed for u in sn.every_unit())


def test_mutable_form_covers_a_choice_block_inside_the_supernet() -> None:
    from fxrazor.mutables import OneShotMutableOP

    def make() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            OneShotMutableOP({"a": nn.Conv2d(8, 8, 3, padding=1), "b": nn.Conv2d(8, 8, 1)}),
            nn.Conv2d(8, 2, 1)).eval()

    x = torch.randn(1, 3, 8, 8)
    sn = fxrazor.convert(make(), x)
    sn.graph_module.get_submodule("2").current_choice = "b"
    cfg, static = fxrazor.export_fix_subnet(sn, slice_weight=True)
    assert cfg["graph_module.2"] == {"chosen": "b", "meta": {"all_choices": ["a", "b"]}}
    assert isinstance(static.get_submodule("2"), nn.Conv2d)  # the chosen candidate only
    assert static.get_submodule("2").kernel_size == (1, 1)
    other = fxrazor.convert(make(), x)
    fxrazor.load_fix_subnet(other, cfg)
    block = other.graph_module.get_submodule("2")
    assert block.is_fixed and block.choices == ["b"]
    with torch.no_grad():
        assert_close(fxrazor.freeze(other)(x), static(x), rtol=0, atol=0)


def test_mutator_load_reads_mmrazors_channel_unit_cfg_shape() -> None:
    sn, x, model = _supernet()
    units, _ = fxrazor.export_fix_subnet(sn, export_subnet_mode="mutator")
    wrapped = {"channel_unit_cfg": {"type": "SequentialMutableChannelUnit",
                                    "default_args": {}, "units": units}, "parse_cfg": {}}
    other = fxrazor.convert(model, x)
    fxrazor.load_fix_subnet(other, wrapped, load_subnet_mode="mutator")
    assert [(u.current_choice, u.is_fixed) for u in other.every_unit()] == [(3, True), (5, True)]
    with pytest.raises(SubnetConfigError, match="channel_unit_cfg"):
        fxrazor.load_fix_subnet(fxrazor.convert(model, x), {"channel_unit_cfg": {"units": 3}},
                                load_subnet_mode="mutator")
