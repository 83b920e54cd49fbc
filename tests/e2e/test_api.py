"""Tests of the user-facing API: convert and its inputs, modes, choices, configs, errors."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
import yaml
from oracles import assert_close
from small_models import (
    FunctionalLinear,
    KwargModel,
    assert_same_state,
    conv_bn_chain,
    state_of,
    tree_of,
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

__all__: list[str] = []


# ---- the input model is never touched ---------------------------------------------------------
def test_convert_choices_freeze_forward_leave_model_unchanged() -> None:
    model, x = conv_bn_chain()
    state, tree = state_of(model), tree_of(model)
    sn = fxrazor.convert(model, x)
    sn.set_choices({"0": 3, "3": 2})
    sn(x)
    fxrazor.freeze(sn)(x)
    assert_same_state(state, model)
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
    assert_same_state(state, model)
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
    # torch.fx's decoration of interpreter errors says nothing a user can act on
    assert "Original traceback" not in str(err) and "tlparse" not in str(err)


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
                                     "zz": {"choice": 1}, "q": {"choice": 1}}, "mutator")
    with pytest.raises(SubnetConfigError, match="'3'"):
        fxrazor.load_fix_subnet(sn, {"0": {"choice": 3}}, "mutator")  # unit '3' missing
    with pytest.raises(SubnetConfigError):
        fxrazor.load_fix_subnet(sn, {"0": {"choice": 30}, "3": {"choice": 2}}, "mutator")
    with pytest.raises(SubnetConfigError, match="lacks the mutables"):
        fxrazor.load_fix_subnet(sn, {"0": {"choice": 3}, "3": {"choice": 2}})  # 'mutable'
    assert not any(u.is_fixed for u in sn.every_unit())
    assert sn.choices() == {"0": 8, "3": 6}


def test_bad_unit_argument() -> None:
    model, x = conv_bn_chain()
    with pytest.raises(InvalidChoiceError, match="one_shot"):
        fxrazor.convert(model, x, unit="no_such_unit")
    with pytest.raises(InvalidChoiceError, match="bogus"):
        fxrazor.convert(model, x, unit_args={"bogus": 1})


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
    cfg, _ = fxrazor.export_fix_subnet(sn, export_subnet_mode="mutator")
    path.write_text(yaml.safe_dump(cfg))
    other = fxrazor.convert(model, x)
    fxrazor.load_fix_subnet(other, str(path), load_subnet_mode="mutator")
    # loading fixes the units at the loaded choices
    assert {u.name: (u.current_choice, u.is_fixed) for u in other.every_unit()} == {
        "0": (3, True), "3": (5, True)}
    with torch.no_grad():
        assert_close(fxrazor.freeze(other)(x), fxrazor.freeze(sn)(x), rtol=0, atol=0)
    third = fxrazor.convert(model, x)
    fxrazor.load_fix_subnet(third, path, load_subnet_mode="mutator")  # a Path works as well
    assert [u.current_choice for u in third.every_unit()] == [3, 5]


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



def test_full_width_holds_for_the_supernets_own_forward() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    x = torch.randn(1, 3, 8, 8)
    sn = fxrazor.convert(model, x)
    sn.set_choices({"0": 3})
    pruned = sn(x)
    with sn.full_width():
        torch.testing.assert_close(sn(x), model(x))  # forward re-syncs: still full
        with sn.full_width():  # nested blocks keep it full
            torch.testing.assert_close(sn(x), model(x))
        torch.testing.assert_close(sn(x), model(x))
    torch.testing.assert_close(sn(x), pruned)  # the choices were never changed
    assert sn.choices() == {"0": 3}
