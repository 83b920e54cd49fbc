"""Tests of the user-facing API: convert, choices, freeze, configs, summary, errors."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
import yaml
from oracles import assert_close, count_params
from small_models import (
    FunctionalLinear,
    KwargModel,
    conv_bn_chain,
    state_of,
    tree_of,
    two_conv,
)
from torch import nn

import fxrazor
from fxrazor.errors import (
    ExampleInputError,
    FxRazorError,
    InvalidChoiceError,
    SubnetConfigError,
    UnknownUnitError,
    UnsupportedModelError,
)
from fxrazor.mutables.channel_unit import OneShotMutableChannelUnit
from fxrazor.verify.oracle import zero_pruned_channels

__all__: list[str] = []


def _assert_same_state(before: dict[str, torch.Tensor], model: nn.Module) -> None:
    after = model.state_dict()
    assert list(after) == list(before)
    changed = [k for k, v in before.items() if not torch.equal(after[k], v)]
    assert changed == []


# ---- the input model is never touched ---------------------------------------------------------
def test_convert_choices_freeze_forward_leave_model_unchanged() -> None:
    model, x = conv_bn_chain()
    state, tree = state_of(model), tree_of(model)
    sn = fxrazor.convert(model, x)
    sn.set_choices({"0": 3, "3": 2})
    sn(x)
    fxrazor.freeze(sn)(x)
    _assert_same_state(state, model)
    assert tree_of(model) == tree
    assert not model.training


def test_training_the_supernet_leaves_model_unchanged() -> None:
    model, x = conv_bn_chain()
    model.train()
    state, tree = state_of(model), tree_of(model)
    sn = fxrazor.convert(model, x)
    sn_state = state_of(sn)
    sn.set_choices({"0": 5})
    optimizer = torch.optim.SGD(sn.parameters(), lr=0.1)
    sn(x).square().mean().backward()
    optimizer.step()
    assert any(not torch.equal(v, sn_state[k]) for k, v in sn.state_dict().items())
    _assert_same_state(state, model)
    assert tree_of(model) == tree
    assert all(p.grad is None for p in model.parameters())


# ---- example inputs --------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["tensor", "tuple", "dict", "dict_reordered"])
def test_example_inputs_forms(form: str) -> None:
    torch.manual_seed(0)
    model = KwargModel().eval()
    x, y = torch.randn(2, 3, 4, 4), torch.rand(2, 1, 4, 4)
    inputs = {"tensor": (x, y), "tuple": (x, y), "dict": {"x": x, "y": y},
              "dict_reordered": {"y": y, "x": x}}[form]
    sn = fxrazor.convert(model, inputs)
    assert [u.name for u in sn.units] == ["c"]
    sn.set_choices({"c": 3})
    frozen = fxrazor.freeze(sn)
    with torch.no_grad():
        expected = F.conv2d(F.conv2d(x, model.c.weight[:3], model.c.bias[:3]) * y,
                            model.d.weight[:, :3], model.d.bias)
        assert_close(sn(x, y), expected)
        assert_close(frozen(x, y), expected)
        assert_close(sn(x=x, y=y), expected)


def test_single_tensor_input() -> None:
    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x)
    assert sorted(sn.choices()) == ["0", "3"]
    assert_close(sn(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("form", ["tensor", "tuple", "dict"])
def test_optional_input_left_out_uses_its_default(form: str) -> None:
    model = KwargModel().eval()
    x = torch.randn(2, 3, 4, 4)
    inputs = {"tensor": x, "tuple": (x,), "dict": {"x": x}}[form]
    sn = fxrazor.convert(model, inputs)
    assert_close(sn(x), model(x))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("build", ["conv_bn_chain", "functional_linear"])
def test_mode_follows_the_model(training: bool, build: str) -> None:
    # functional_linear adds parameter ops (DynamicParam) to the supernet graph
    model, x = conv_bn_chain() if build == "conv_bn_chain" else (FunctionalLinear(),
                                                                 torch.randn(2, 4))
    model.train(training)
    sn = fxrazor.convert(model, x)
    assert sn.training is training
    assert sn.graph_module.training is training
    assert all(m.training is training for m in sn.modules())
    assert fxrazor.freeze(sn).training is training
    assert model.training is training


def test_layers_keep_their_own_mode_and_containers_take_the_models() -> None:
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Dropout(0.5)),
        nn.Conv2d(8, 4, 1),
    ).eval()
    model[0][2].train()  # e.g. Monte-Carlo dropout in an evaluated model
    sn = fxrazor.convert(model, torch.randn(1, 3, 6, 6))
    expected = {"": False, "0": False, "0.0": False, "0.1": False, "0.2": True, "1": False}
    assert {name: m.training for name, m in sn.graph_module.named_modules()} == expected
    frozen = fxrazor.freeze(sn)
    assert {name: m.training for name, m in frozen.named_modules()} == expected


class _NeedsRealRun(nn.Module):
    """Its shapes need a real run: ``nonzero`` has no meta kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)
        self.drop, self.head = nn.Dropout(0.5), nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.drop(self.bn(self.conv(x)))), torch.nonzero(x)


@pytest.mark.parametrize("in_place", [False, True])
def test_a_real_shape_run_gives_every_layer_its_own_mode_back(in_place: bool) -> None:
    model = _NeedsRealRun().eval()
    model.drop.train()
    convert = fxrazor.convert_ if in_place else fxrazor.convert
    sn = convert(model, torch.randn(1, 3, 6, 6))
    expected = {"": False, "conv": False, "bn": False, "drop": True, "head": False}
    assert {name: m.training for name, m in sn.graph_module.named_modules()} == expected
    assert {name: m.training for name, m in model.named_modules()} == expected
    fxrazor.summary(sn, flops=True)  # counts FLOPs in eval mode, then gives the modes back
    assert {name: m.training for name, m in sn.graph_module.named_modules()} == expected


def test_custom_dynamic_op_built_fresh_takes_the_models_mode() -> None:
    from fxrazor.ops import DynamicConv2d

    class FreshConv(DynamicConv2d):
        @classmethod
        def from_static(cls, module: nn.Module) -> FreshConv:
            op = super().from_static(module)
            op.train(True)  # like a module built anew, in nn.Module's default mode
            return op

    model, x = conv_bn_chain()
    sn = fxrazor.convert(model.eval(), x, dynamic_ops={nn.Conv2d: FreshConv})
    assert any(isinstance(m, FreshConv) for m in sn.modules())
    assert not any(m.training for m in sn.modules())


def test_convert_makes_its_own_layer_copies_dynamic_and_convert__wraps_the_users() -> None:
    from fxrazor.ops import DynamicConv2d

    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x)
    assert type(sn.graph_module.get_submodule("0")) is DynamicConv2d
    assert type(model[0]) is nn.Conv2d  # the user's layer is untouched
    shared = fxrazor.convert_(model, x)
    dynamic = shared.graph_module.get_submodule("0")
    assert type(dynamic) is DynamicConv2d and type(model[0]) is nn.Conv2d
    assert dynamic.weight is model[0].weight  # a wrapper sharing the user's weights
    sn.set_choices({"0": 3})
    shared.set_choices({"0": 3})
    torch.testing.assert_close(sn(x), shared(x), rtol=0, atol=0)


class _SharesOnCopy(nn.Module):
    """A block whose copy shares its layer with the original (a frozen part, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def __deepcopy__(self, memo: dict) -> _SharesOnCopy:
        new = _SharesOnCopy.__new__(_SharesOnCopy)
        nn.Module.__init__(new)
        new.conv = self.conv  # the user's own layer, in the copy
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _InsideOpaque(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer(x)
        return y if y.sum() > -1e9 else -y  # data-dependent: stays an opaque leaf


class _LayerAlsoInOpaqueLeaf(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Conv2d(3, 8, 1)
        self.block = _InsideOpaque(self.shared)
        self.conv2 = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.shared(x).relu()) + self.block(x)


def test_convert_never_retypes_a_layer_the_user_or_an_opaque_leaf_holds() -> None:
    x = torch.randn(1, 3, 6, 6)
    model = nn.Sequential(_SharesOnCopy(), nn.ReLU(), nn.Conv2d(8, 4, 1))
    sn = fxrazor.convert(model, x)
    assert type(model[0].conv) is nn.Conv2d  # shared by the copy, still the user's layer
    sn.set_choices({sn.units[0].name: 4})
    torch.testing.assert_close(fxrazor.freeze(sn)(x), sn(x))

    model = _LayerAlsoInOpaqueLeaf()
    sn = fxrazor.convert(model, x)
    assert "block" in sn.analysis.opaque
    unit = next(u for u in sn.units if u.name == "shared")
    sn.set_choices({unit.name: 4})
    assert type(sn.graph_module.get_submodule("block.layer")) is nn.Conv2d
    torch.testing.assert_close(fxrazor.freeze(sn)(x), sn(x))


def test_units_cannot_share_one_channel_mutable_and_modes_must_agree() -> None:
    from fxrazor.mutables.channel_unit import SequentialMutableChannelUnit
    from fxrazor.mutables.mutable_channel import SquentialMutableChannel

    model, x = conv_bn_chain()
    with pytest.raises(InvalidChoiceError, match="cannot give a mutable_channel"):
        fxrazor.convert(model, x, unit_args={"mutable_channel": SquentialMutableChannel(4)})
    with pytest.raises(InvalidChoiceError, match="'ratio' mode, the unit in 'number'"):
        SequentialMutableChannelUnit(
            4, mutable_channel=SquentialMutableChannel(4, choice_mode="ratio"))


def test_a_dynamic_op_with_a_static_from_static_is_built_by_it() -> None:
    from fxrazor.ops import DynamicConv2d

    built = []

    class StaticBuilt(DynamicConv2d):
        @staticmethod
        def from_static(module: nn.Module) -> DynamicConv2d:
            built.append(module)
            return DynamicConv2d.from_static(module)

    assert StaticBuilt.adopt(nn.Conv2d(2, 2, 1)) is None
    model, x = conv_bn_chain()
    fxrazor.convert(model, x, dynamic_ops={nn.Conv2d: StaticBuilt})
    assert built


def test_hooks_on_the_graph_module_run_once_per_supernet_call() -> None:
    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x)
    calls = []
    sn.graph_module.register_forward_pre_hook(lambda module, args: calls.append(1))
    sn(x)  # the first call also generates the graph module's code
    sn(x)
    assert len(calls) == 2


# ---- bad input -------------------------------------------------------------------------------
def test_non_module_is_rejected() -> None:
    with pytest.raises(UnsupportedModelError, match="nn.Module"):
        fxrazor.convert(lambda t: t * 2, torch.randn(2, 3))
    with pytest.raises(UnsupportedModelError):
        fxrazor.freeze(nn.Linear(2, 2))  # type: ignore[arg-type]


def _bad_input_error() -> ExampleInputError:
    with pytest.raises(ExampleInputError) as info:
        fxrazor.convert(KwargModel(), torch.randn(1, 5, 4, 4))  # conv 'c' wants 3 channels
    return info.value


def test_example_inputs_the_model_rejects_name_the_module() -> None:
    err = _bad_input_error()
    assert isinstance(err, FxRazorError)
    assert "'c'" in str(err)
    assert isinstance(err.__cause__, Exception)


def test_example_input_error_keeps_the_original_exception() -> None:
    err = _bad_input_error()
    assert "to have 3 channels" in str(err.__cause__)
    assert "ShapeProp" not in str(err.__cause__)
    assert "to have 3 channels" in str(err)


def test_wrong_example_input_type() -> None:
    model, _ = conv_bn_chain()
    with pytest.raises(ExampleInputError):
        fxrazor.convert(model, {1, 2})
    with pytest.raises(ExampleInputError, match="unknown"):
        fxrazor.convert(KwargModel(), {"x": torch.randn(1, 3, 4, 4), "z": torch.randn(1)})


def test_choice_out_of_range_names_unit_and_range() -> None:
    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x)
    for bad in (0, 9, -1):
        with pytest.raises(InvalidChoiceError, match=r"'0'.*\[1, 8\]"):
            sn.set_choices({"0": bad})
    assert sn.choices() == {"0": 8, "3": 6}


def test_unknown_unit_in_set_choices() -> None:
    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x)
    with pytest.raises(UnknownUnitError, match="nope"):
        sn.set_choices({"0": 2, "nope": 3})
    assert sn.choices() == {"0": 8, "3": 6}
    with pytest.raises(InvalidChoiceError):
        sn.set_choices([("0", 2)])  # type: ignore[arg-type]


@pytest.mark.parametrize("order", ["bad_last", "bad_first"])
def test_set_choices_is_atomic(order: str) -> None:
    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x)
    sn.set_choices({"0": 4, "3": 5})
    items = [("0", 2), ("3", 99)]
    bad = dict(items if order == "bad_last" else items[::-1])
    with pytest.raises(InvalidChoiceError):
        sn.set_choices(bad)
    assert sn.choices() == {"0": 4, "3": 5}
    assert [u.activated_channels for u in sn.units] == [4, 5]
    assert fxrazor.freeze(sn).get_submodule("0").out_channels == 4


def test_unknown_unit_in_loaded_config_lists_names() -> None:
    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x)
    with pytest.raises(SubnetConfigError, match=r"zz.*\bq\b|q.*zz"):
        fxrazor.load_fix_subnet(sn, {"0": {"choice": 3}, "3": {"choice": 2},
                                     "zz": {"choice": 1}, "q": {"choice": 1}})
    with pytest.raises(SubnetConfigError, match="'3'"):
        fxrazor.load_fix_subnet(sn, {"0": {"choice": 3}})  # unit '3' missing
    with pytest.raises(SubnetConfigError):
        fxrazor.load_fix_subnet(sn, {"0": {"choice": 30}, "3": {"choice": 2}})
    assert sn.choices() == {"0": 8, "3": 6}


def test_bad_unit_argument() -> None:
    model, x = conv_bn_chain()
    with pytest.raises(InvalidChoiceError, match="one_shot"):
        fxrazor.convert(model, x, unit="no_such_unit")
    with pytest.raises(InvalidChoiceError, match="bogus"):
        fxrazor.convert(model, x, unit_args={"bogus": 1})


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


def test_functional_linear_hidden_layer_is_prunable() -> None:
    torch.manual_seed(0)
    model = FunctionalLinear().eval()
    x = torch.randn(2, 4)
    sn = fxrazor.convert(model, x)
    assert [u.num_channels for u in sn.units] == [8]
    sn.set_choices({sn.units[0].name: 5})
    assert fxrazor.freeze(sn).get_submodule("out").in_features == 5


# ---- choices ---------------------------------------------------------------------------------
def test_choices_sample_and_round_trip() -> None:
    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x)
    assert sn.choices() == {"0": 8, "3": 6}
    assert sn.sample_choices("max") == {"0": 8, "3": 6}
    assert sn.sample_choices("min") == {"0": 1, "3": 1}
    random.seed(0)
    seen = set()
    for _ in range(20):
        sample = sn.sample_choices()
        assert 1 <= sample["0"] <= 8 and 1 <= sample["3"] <= 6
        seen.add(tuple(sample.values()))
        assert sn.choices() == {"0": 8, "3": 6}  # sampling applies nothing
    assert len(seen) > 5
    sn.set_choices(sample)
    assert sn.choices() == sample
    assert [u.activated_channels for u in sn.units] == [sample["0"], sample["3"]]
    sn.set_choices(sn.sample_choices("min"))
    assert fxrazor.freeze(sn).get_submodule("3").weight.shape == (1, 1, 3, 3)
    with pytest.raises(InvalidChoiceError, match="random"):
        sn.sample_choices("biggest")


def test_export_yaml_load_into_second_supernet(tmp_path) -> None:
    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x)
    sn.set_choices({"0": 3, "3": 5})
    path = tmp_path / "subnet.yaml"
    path.write_text(yaml.safe_dump(fxrazor.export_fix_subnet(sn)))
    other = fxrazor.convert(model, x)
    fxrazor.load_fix_subnet(other, str(path))
    assert other.choices() == {"0": 3, "3": 5}
    with torch.no_grad():
        assert_close(fxrazor.freeze(other)(x), fxrazor.freeze(sn)(x), rtol=0, atol=0)
    third = fxrazor.convert(model, x)
    fxrazor.load_fix_subnet(third, path)  # a Path works as well
    assert third.choices() == {"0": 3, "3": 5}


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


# ---- batch norm in training mode -------------------------------------------------------------
def test_train_forward_updates_only_kept_bn_statistics() -> None:
    model, x = conv_bn_chain()
    model.train()
    sn = fxrazor.convert(model, x)
    sn.set_choices({"0": 3})
    bn = sn.graph_module.get_submodule("1")
    mean0, var0 = bn.running_mean.clone(), bn.running_var.clone()
    count0 = int(bn.num_batches_tracked)
    sn(x)
    with torch.no_grad():
        h = model[0](x)[:, :3]
    m = model[1].momentum
    expected_mean = (1 - m) * mean0[:3] + m * h.mean(dim=(0, 2, 3))
    expected_var = (1 - m) * var0[:3] + m * h.var(dim=(0, 2, 3), unbiased=True)
    assert_close(bn.running_mean[:3], expected_mean, rtol=1e-5, atol=1e-6)
    assert_close(bn.running_var[:3], expected_var, rtol=1e-5, atol=1e-6)
    assert torch.equal(bn.running_mean[3:], mean0[3:])
    assert torch.equal(bn.running_var[3:], var0[3:])
    assert int(bn.num_batches_tracked) == count0 + 1
    assert torch.equal(model[1].running_mean, torch.zeros(8))  # the original is untouched


@pytest.mark.parametrize("training", [False, True])
def test_supernet_starts_with_the_models_state(training: bool) -> None:
    model, x = conv_bn_chain()
    model.train(training)
    sn = fxrazor.convert(model, x)
    _assert_same_state(state_of(model), sn.graph_module)


def test_summary_leaves_train_mode_supernet_state_unchanged() -> None:
    model, x = conv_bn_chain()
    model.train()
    sn = fxrazor.convert(model, x)
    before = state_of(sn)
    fxrazor.summary(sn)
    _assert_same_state(before, sn)


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


def test_convert_underscore_shares_weights_and_convert_does_not() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 2, 1))
    x = torch.randn(1, 3, 4, 4)
    copied = fxrazor.convert(model, x)
    shared = fxrazor.convert_(model, x)
    assert copied.graph_module.get_submodule("0").weight is not model[0].weight
    assert shared.graph_module.get_submodule("0").weight is model[0].weight
    shared.set_choices({"0": 5})
    torch.testing.assert_close(fxrazor.freeze(shared)(x), shared(x))
    with torch.no_grad():
        shared.graph_module.get_submodule("0").weight.add_(1.0)
    assert torch.equal(model[0].weight, shared.graph_module.get_submodule("0").weight)


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


@pytest.mark.parametrize("dim", [-1, 2])
@pytest.mark.parametrize("split_dims", ["outer", "largest"])
def test_unflatten_sizes_follow_the_pruned_dim(dim: int, split_dims: str) -> None:
    class Unflat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x).unflatten(dim, (2, 4)).relu().flatten(-2))

    torch.manual_seed(0)
    model, x = Unflat().eval(), torch.randn(2, 5, 4)
    sn = fxrazor.convert(model, x, split_dims=split_dims)
    (unit,) = sn.units
    sn.set_choices({unit.name: 1})
    frozen = fxrazor.freeze(sn)
    torch.testing.assert_close(frozen(x), sn(x))
    torch.testing.assert_close(frozen(x), zero_pruned_channels(model, sn)(x))
    assert frozen.get_submodule("b").in_features < 8


def test_buffers_follow_channels_but_never_create_them() -> None:
    class Tables(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 1)
            self.register_buffer("embed", torch.randn(1, 6, 1, 1))   # added to the conv stream
            self.register_buffer("coords", torch.randn(5, 4))       # only a buffer makes these
            self.mlp = nn.Linear(4, 6)
            self.head = nn.Conv2d(6, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            bias = self.mlp(self.coords).mean(0)[None, :, None, None]
            return self.head(self.conv(x) + self.embed + bias)

    torch.manual_seed(0)
    model, x = Tables().eval(), torch.randn(1, 3, 4, 4)
    sn = fxrazor.convert(model, x)
    (unit,) = sn.units  # the stream: conv, mlp rows and the added buffer, 6 channels
    assert {c["name"] for c in unit.output_related} >= {"conv", "embed:dim1", "mlp"}
    coords = [g for g in sn.analysis.pinned if {str(s) for s in g.slots} == {"coords.dim1",
                                                                              "mlp.in"}]
    assert coords and coords[0].reasons == ("no layer produces these channels",)
    sn.set_choices({unit.name: 2})
    frozen = fxrazor.freeze(sn)
    torch.testing.assert_close(frozen(x), sn(x))
    torch.testing.assert_close(frozen(x), zero_pruned_channels(model, sn)(x))
    assert frozen.embed.shape == (1, 2, 1, 1) and frozen.coords.shape == (5, 4)


def test_freeze_keeps_the_chosen_candidate_of_a_one_shot_op() -> None:
    from fxrazor.mutables import OneShotMutableOP

    class Searchable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 1)
            self.op = OneShotMutableOP({"k3": nn.Conv2d(8, 8, 3, padding=1),
                                        "k1": nn.Conv2d(8, 8, 1)})
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.op(self.stem(x)))

    torch.manual_seed(0)
    model, x = Searchable().eval(), torch.randn(1, 3, 6, 6)
    sn = fxrazor.convert(model, x)
    op = sn.graph_module.get_submodule("op")
    op.current_choice = "k1"
    frozen = fxrazor.freeze(sn)
    assert isinstance(frozen.get_submodule("op"), nn.Conv2d)
    assert frozen.get_submodule("op").kernel_size == (1, 1)
    torch.testing.assert_close(frozen(x), sn(x))
    torch.testing.assert_close(frozen(x), model.head(model.op.candidates["k1"](model.stem(x))))
    op.current_choice = None
    with pytest.raises(InvalidChoiceError, match="'op' has no current choice"):
        fxrazor.freeze(sn)


@pytest.mark.parametrize("enabled", [True, False])
def test_convert_and_freeze_leave_the_garbage_collector_as_they_found_it(
        enabled: bool) -> None:
    import gc

    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        fxrazor.freeze(fxrazor.convert(model, torch.randn(1, 2)))
        assert gc.isenabled() is enabled
        with pytest.raises(ExampleInputError):
            fxrazor.convert(model, torch.randn(1, 5))  # fails inside the pause
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()


def test_garbage_from_before_a_convert_is_still_collected_by_young_collections() -> None:
    # A regression test: promoting everything to the oldest generation after a convert
    # (gc.freeze + unfreeze) left the caller's cyclic garbage to full collections, and a
    # loop of conversions grew by the size of each dropped model.
    import gc
    import weakref

    class Node:
        pass

    cycle = Node()
    cycle.self = cycle  # type: ignore[attr-defined]
    gone = weakref.ref(cycle)
    del cycle  # unreachable, in a young generation
    fxrazor.convert(nn.Sequential(nn.Linear(2, 3), nn.ReLU()), torch.randn(1, 2))
    gc.collect(1)  # the young generations only
    assert gone() is None
