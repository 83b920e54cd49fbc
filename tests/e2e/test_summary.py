"""The summary and unit config templates: units, widths, cost, pinned channels and why."""

from __future__ import annotations

import torch
import yaml
from oracles import count_params
from small_models import (
    assert_same_state,
    conv_bn_chain,
    state_of,
)
from torch import nn

import fxrazor


def test_model_without_prunable_channels() -> None:
    model = nn.Linear(4, 3)
    sn = fxrazor.convert(model, torch.randn(2, 4))
    assert sn.units == []
    assert sn.choices() == {}
    sn.set_choices({})
    text = fxrazor.summary(sn)
    assert "No prunable units" in text
    assert "pinned" in text.lower()
    # the reason each pinned group cannot be pruned is shown, next to the weight it pins
    weight_rows = [line for line in text.splitlines() if line.startswith("weight")]
    assert weight_rows and all(len(row.split()) > 2 for row in weight_rows)
    assert count_params(fxrazor.freeze(sn)) == count_params(model)


def test_sequential_linear_summary_says_model_output() -> None:
    sn = fxrazor.convert(nn.Sequential(nn.Linear(4, 3)), torch.randn(2, 4))
    assert sn.units == []
    text = fxrazor.summary(sn)
    assert "model output" in text
    assert "input is not prunable" in text


def test_summary_leaves_train_mode_supernet_state_unchanged() -> None:
    model, x = conv_bn_chain()
    model.train()
    sn = fxrazor.convert(model, x)
    before = state_of(sn)
    fxrazor.summary(sn)
    assert_same_state(before, sn)


# ---- summary and config templates -----------------------------------------------------------
def test_summary_lists_units_and_cost() -> None:
    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x)
    sn.set_choices({"0": 4, "3": 3})
    text = fxrazor.summary(sn)
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    for unit in sn.units:
        assert unit.name in rows
    assert rows["0"][1:3] == ["8", "4"] and rows["3"][1:3] == ["6", "3"]
    assert rows["params"][1:3] == [str(count_params(model)),
                                   str(count_params(fxrazor.freeze(sn)))]
    assert "FLOPs" in rows
    assert int(rows["FLOPs"][2]) < int(rows["FLOPs"][1])


def test_config_template_format() -> None:
    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x)
    sn.set_choices({"0": 5})
    config = sn.unit("0").config_template(with_init_args=True, with_channels=True)
    assert config["choice"] == 5
    assert config["init_args"]["num_channels"] == 8
    outputs = {c["name"]: c for c in config["channels"]["output_related"]}
    inputs = {c["name"]: c for c in config["channels"]["input_related"]}
    assert {"0", "1"} <= set(outputs) and "3" in inputs
    for entry in [*outputs.values(), *inputs.values()]:
        assert {"name", "start", "end", "expand_ratio", "is_output_channel"} <= set(entry)
        assert (entry["start"], entry["end"], entry["expand_ratio"]) == (0, 8, 1)
    assert all(c["is_output_channel"] for c in outputs.values())
    assert not any(c["is_output_channel"] for c in inputs.values())
    assert yaml.safe_load(yaml.safe_dump(config)) == config  # plain data
