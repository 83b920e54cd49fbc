"""Channel unit kinds through convert: sequential, one-shot, L1, a unit class, unit configs."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from oracles import assert_close
from small_models import (
    conv_bn_chain,
    two_conv,
)
from torch import nn

import fxrazor
from fxrazor.errors import (
    InvalidChoiceError,
)
from fxrazor.mutables.one_shot_unit import OneShotMutableChannelUnit


def test_units_cannot_share_one_channel_mutable_and_modes_must_agree() -> None:
    from fxrazor.mutables.channel_unit import SequentialMutableChannelUnit
    from fxrazor.mutables.mutable_channel import SquentialMutableChannel

    model, x = conv_bn_chain()
    with pytest.raises(InvalidChoiceError, match="cannot give a mutable_channel"):
        fxrazor.convert(model, x, unit_args={"mutable_channel": SquentialMutableChannel(4)})
    with pytest.raises(InvalidChoiceError, match="'ratio' mode, the unit in 'number'"):
        SequentialMutableChannelUnit(
            4, mutable_channel=SquentialMutableChannel(4, choice_mode="ratio"))


# ---- unit kinds ------------------------------------------------------------------------------
def test_one_shot_units_take_only_candidates() -> None:
    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x, unit="one_shot",
                         unit_args={"candidate_choices": [0.25, 0.5, 1.0]})
    assert sn.choices() == {"0": 1.0, "3": 1.0}
    assert sn.sample_choices("min") == {"0": 0.25, "3": 0.25}
    random.seed(1)
    assert all(v in (0.25, 0.5, 1.0) for v in sn.sample_choices().values())
    with pytest.raises(InvalidChoiceError, match=r"0\.3"):
        sn.set_choices({"0": 0.3})
    sn.set_choices({"0": 0.5, "3": 0.5})
    frozen = fxrazor.freeze(sn)
    assert frozen.get_submodule("0").out_channels == 4
    assert frozen.get_submodule("3").out_channels == 3
    with torch.no_grad():
        assert_close(frozen(x), sn(x))


def test_unit_given_as_a_class() -> None:
    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x, unit=OneShotMutableChannelUnit)
    assert all(type(u) is OneShotMutableChannelUnit for u in sn.units)
    assert sn.choices() == {"0": 1.0, "3": 1.0}


def test_l1_unit_keeps_the_highest_l1_channels() -> None:
    model, x = two_conv()
    sn = fxrazor.convert(model, x, unit="l1")
    assert list(sn.choices()) == ["0"]
    sn.set_choices({"0": 3})
    kept = [0, 3, 5]  # row L1 norms are 9, 0.9, 4.5, 18, 1.8, 13.5
    assert sn.units[0].current_mask.nonzero().flatten().tolist() == kept
    frozen = fxrazor.freeze(sn)
    w1, b1, w2, b2 = (p.detach() for p in (model[0].weight, model[0].bias,
                                            model[1].weight, model[1].bias))
    assert torch.equal(frozen.get_submodule("0").weight, w1[kept])
    assert torch.equal(frozen.get_submodule("1").weight, w2[:, kept])
    with torch.no_grad():
        expected = F.conv2d(F.conv2d(x, w1[kept], b1[kept]), w2[:, kept], b2)
        assert_close(frozen(x), expected)
        assert_close(sn(x), expected)


def test_unit_configs_round_trip_through_init_from_cfg_with_parameter_members() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 1)
            self.gamma = nn.Parameter(torch.rand(6, 1, 1))
            self.head = nn.Conv2d(6, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.conv(x) * self.gamma)

    model = Scaled().eval()
    sn = fxrazor.convert(model, torch.randn(1, 3, 4, 4))
    (unit,) = sn.units
    cfg = unit.config_template(with_init_args=True, with_channels=True)
    assert {c["name"] for c in cfg["channels"]["output_related"]} == {"conv", "gamma:dim0"}
    rebuilt = type(unit).init_from_cfg(model, cfg)
    assert rebuilt.num_channels == 6 and rebuilt.output_related == unit.output_related
    unit.prepare_for_pruning(sn)  # every member exists in the supernet
    with pytest.raises(fxrazor.errors.SubnetConfigError, match="nope"):
        type(unit).init_from_cfg(model, {**cfg, "channels": {
            "input_related": [], "output_related": [{**cfg["channels"]["output_related"][0],
                                                      "name": "nope"}]}})
