"""SlimmableChannelUnit with switchable BatchNorm (Yu et al., ICLR 2019): one set of
statistics and affine parameters per width; the references are plain BatchNorms built by
hand from the sets and the original model."""

from __future__ import annotations

import copy
import inspect
import io
import logging

import pytest
import torch
from oracles import assert_close
from torch import nn

import fxrazor
from fxrazor.errors import FixedMutableError, InvalidArgumentError, InvalidChoiceError
from fxrazor.mutables import slimmable_unit
from fxrazor.ops.norm import DynamicBatchNorm2d
from fxrazor.ops.switchable_norm import SwitchableBatchNorm1d, SwitchableBatchNorm2d

CANDIDATES = [2, 4, 8]


def _model() -> tuple[nn.Module, torch.Tensor]:
    """conv(3->8)-bn-relu-conv(8->2): one unit '0' of 8 channels, BN '1' in it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 2, 1))
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-1, 1)
    return model.eval(), torch.randn(4, 3, 6, 6)


def _supernet(model: nn.Module, x: torch.Tensor) -> fxrazor.Supernet:
    return fxrazor.convert(model, x, unit="slimmable",
                           unit_args={"candidate_choices": CANDIDATES})


def _bn(sn: fxrazor.Supernet) -> SwitchableBatchNorm2d:
    bn = sn.graph_module.get_submodule("1")
    assert isinstance(bn, SwitchableBatchNorm2d)
    return bn


def _set_state(bn: SwitchableBatchNorm2d, width: int | str) -> dict[str, torch.Tensor]:
    source = bn if width == bn.num_features else bn.candidate_bn[str(width)]
    return {k: v.detach().clone() for k, v in source.state_dict().items()
            if not k.startswith("candidate_bn.")}


def test_every_set_starts_as_the_slice_of_the_original() -> None:
    model, x = _model()
    sn = _supernet(model, x)
    bn, original = _bn(sn), model[1]
    assert bn.widths == CANDIDATES and sn.unit("0").switchable_norms == [bn]
    for width in (2, 4):
        state = _set_state(bn, width)
        for name in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(state[name], getattr(original, name)[:width])
    with torch.no_grad():  # full width is the original model
        assert_close(sn(x), model(x))


def test_training_one_width_leaves_the_other_sets_bit_identical() -> None:
    model, x = _model()
    sn = _supernet(model, x).train()
    bn = _bn(sn)
    optimizer = torch.optim.SGD(sn.parameters(), lr=0.1)
    for width, others in ((4, (2, 8)), (8, (2, 4)), (2, (4, 8))):
        before = {w: _set_state(bn, w) for w in CANDIDATES}
        sn.set_choices({"0": width})
        for _ in range(2):
            optimizer.zero_grad()
            sn(x).square().mean().backward()
            optimizer.step()
        for w in others:
            after = _set_state(bn, w)
            assert all(torch.equal(before[w][k], after[k]) for k in after), w
        moved = _set_state(bn, width)
        for name in ("weight", "bias", "running_mean", "running_var"):
            assert not torch.equal(before[width][name], moved[name]), (width, name)
        assert int(moved["num_batches_tracked"]) == int(before[width]["num_batches_tracked"]) + 2


@pytest.mark.parametrize("training", [False, True])
def test_each_width_is_a_plain_batchnorm_built_from_its_set(training: bool) -> None:
    model, _ = _model()
    bn = SwitchableBatchNorm2d.from_static(copy.deepcopy(model[1]),
                                           {2: torch.tensor([1, 5]), 4: slice(0, 4)}, name="bn")
    bn.train(training)
    for width, sel in ((2, torch.tensor([1, 5])), (4, slice(0, 4))):
        reference = nn.BatchNorm2d(width).train(training)
        reference.load_state_dict(_set_state(bn, width))
        if width == 2:  # the set started as the hand-taken slice at positions 1 and 5
            assert torch.equal(reference.running_mean, model[1].running_mean[[1, 5]])
        bn.set_selection("channels", sel)
        xw = torch.randn(3, width, 4, 4)
        assert_close(bn(xw), reference(xw))
        assert torch.equal(bn.candidate_bn[str(width)].running_var, reference.running_var)
    reference = nn.BatchNorm2d(8).train(training)
    reference.load_state_dict(_set_state(bn, 8))
    bn.set_selection("channels", None)
    full = torch.randn(3, 8, 4, 4)
    assert_close(bn(full), reference(full))
    assert torch.equal(bn.running_mean, reference.running_mean)


def test_frozen_equals_the_supernet_at_every_candidate() -> None:
    model, x = _model()
    sn = _supernet(model, x).train()
    for width in CANDIDATES:  # make the sets differ from the original slices
        sn.set_choices({"0": width})
        sn(x)
    sn.eval()
    for width in CANDIDATES:
        sn.set_choices({"0": width})
        frozen = fxrazor.freeze(sn)
        static = frozen.get_submodule("1")
        assert type(static) is nn.BatchNorm2d and static.num_features == width
        for k, v in _set_state(_bn(sn), width).items():
            assert torch.equal(static.state_dict()[k], v)
        with torch.no_grad():
            assert_close(frozen(x), sn(x))


def test_state_dict_round_trip_keeps_every_set() -> None:
    model, x = _model()
    sn = _supernet(model, x).train()
    for width in (2, 4):
        sn.set_choices({"0": width})
        sn(x)
    state = sn.state_dict()
    assert "graph_module.1.candidate_bn.4.running_mean" in state
    fresh = _supernet(model, x)
    fresh.load_state_dict(state)
    sn.eval()
    for width in CANDIDATES:
        sn.set_choices({"0": width})
        fresh.set_choices({"0": width})
        with torch.no_grad():
            assert torch.equal(fresh(x), sn(x))


def test_deepcopy_and_pickle_carry_the_sets_and_the_remembered_layers() -> None:
    model, x = _model()
    sn = _supernet(model, x)
    buffer = io.BytesIO()
    torch.save(sn, buffer)
    buffer.seek(0)
    for twin in (copy.deepcopy(sn), torch.load(buffer, weights_only=False)):
        assert twin.unit("0").switchable_norms == [_bn(twin)]
        twin.unit("0").alter_candidates_of_switchbn([4, 8])
        assert _bn(twin).widths == [4, 8] and _bn(sn).widths == CANDIDATES


def test_alter_candidates_keeps_staying_sets_and_slices_new_ones() -> None:
    model, x = _model()
    sn = _supernet(model, x).train()
    sn.set_choices({"0": 4})
    sn(x)
    unit, bn = sn.unit("0"), _bn(sn)
    trained, kept_set = _set_state(bn, 4), bn.candidate_bn["4"]
    full = _set_state(bn, 8)
    unit.alter_candidates_of_switchbn([4, 6, 8])
    assert unit.candidate_choices == [4, 6, 8] and unit.current_choice == 8
    assert bn.widths == [4, 6, 8] and bn.candidate_bn["4"] is kept_set
    unit.prepare_for_pruning(sn)  # again: nothing is rebuilt
    assert _bn(sn) is bn and bn.candidate_bn["4"] is kept_set
    assert all(torch.equal(v, _set_state(bn, 4)[k]) for k, v in trained.items())
    for name in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(_set_state(bn, 6)[name], full[name][:6])
    sn.eval()
    sn.set_choices({"0": 6})
    with torch.no_grad():
        assert_close(fxrazor.freeze(sn)(x), sn(x))
    with pytest.raises(InvalidChoiceError):
        sn.set_choices({"0": 2})


def test_bad_input_is_refused_with_nothing_changed() -> None:
    model, x = _model()
    sn = _supernet(model, x)
    unit, bn = sn.unit("0"), _bn(sn)
    with pytest.raises(InvalidChoiceError, match=r"'1' has no set .* 3 channels now kept; it "
                                                 r"has widths \[2, 4, 8\]"):
        bn.set_selection("channels", slice(0, 3))
    with pytest.raises(InvalidChoiceError, match="4 channels now kept"):  # not width 4's
        bn.set_selection("channels", torch.tensor([0, 1, 2, 7]))
    assert bn.width == 8
    with pytest.raises(InvalidChoiceError, match="9"):
        unit.alter_candidates_of_switchbn([4, 9])
    assert bn.widths == CANDIDATES and unit.candidate_choices == CANDIDATES
    with pytest.raises(InvalidChoiceError, match="keep 3 channels"):
        bn.set_candidates({4: slice(0, 3)})
    with pytest.raises(InvalidArgumentError, match="needs a BatchNorm1d"):
        SwitchableBatchNorm1d.from_static(nn.BatchNorm2d(4))
    with pytest.raises(InvalidArgumentError, match="'channels' role"):
        bn.set_selection("out", None)
    unit.fix_chosen(4)
    with pytest.raises(FixedMutableError):
        unit.alter_candidates_of_switchbn([2, 8])
    assert bn.widths == CANDIDATES


class CatBN(nn.Module):
    """BN over cat(conv(x), x): the input's 3 channels are pinned, the conv's 6 a unit."""

    def __init__(self, shared: bool) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 1)
        self.b = nn.Conv2d(3, 4, 1) if shared else None
        self.bn = nn.BatchNorm2d(10 if shared else 9)
        self.head = nn.Conv2d(10 if shared else 9, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        other = self.b(x) if self.b is not None else x
        return self.head(self.bn(torch.cat([self.a(x), other], 1)))


def test_pinned_channels_are_in_every_set() -> None:
    torch.manual_seed(0)
    model, x = CatBN(shared=False).eval(), torch.randn(2, 3, 4, 4)
    sn = fxrazor.convert(model, x, unit="slimmable", unit_args={"candidate_choices": [2, 6]})
    bn = sn.graph_module.get_submodule("bn")
    assert isinstance(bn, SwitchableBatchNorm2d) and bn.widths == [5, 9]
    assert torch.equal(bn.candidate_bn["5"].running_mean,  # channels 0, 1 and the input's
                       model.bn.running_mean[[0, 1, 6, 7, 8]])
    sn.set_choices({sn.units[0].name: 2})
    with torch.no_grad():
        assert_close(fxrazor.freeze(sn)(x), sn(x))


def _cat_supernet() -> tuple[nn.Module, torch.Tensor, fxrazor.Supernet]:
    torch.manual_seed(0)
    model, x = CatBN(shared=True).eval(), torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
    sn = fxrazor.convert(model, x, unit="slimmable", unit_args={
        "candidate_choices": [0.5, 1.0], "choice_mode": "ratio"})
    return model, x, sn


def test_a_batchnorm_of_several_units_has_a_set_per_combination() -> None:
    model, x, sn = _cat_supernet()
    bn = sn.graph_module.get_submodule("bn")  # cat(a: 6 -> positions 0-5, b: 4 -> 6-9)
    order = [s.name for s in sn.analysis.units if any(sl.target == "bn" for sl, _ in s.members)]
    assert order == ["b", "a"]  # set names list the kept counts in this order
    assert isinstance(bn, SwitchableBatchNorm2d)
    assert sorted(bn.candidate_bn) == ["2_3", "2_6", "4_3"] and bn.widths == [5, 7, 8, 10]
    assert sn.unit("a").switchable_norms == [bn] == sn.unit("b").switchable_norms
    assert torch.equal(bn.candidate_bn["2_3"].running_mean,  # a keeps 0-2, b keeps 6-7
                       model.bn.running_mean[[0, 1, 2, 6, 7]])
    sn.train()
    combos = {"2_3": (0.5, 0.5), "2_6": (0.5, 1.0), "4_3": (1.0, 0.5)}
    before = {name: _set_state(bn, name) for name in combos}
    sn.set_choices({"b": 0.5, "a": 1.0})
    sn(x)
    for name in ("2_3", "4_3"):  # the other combinations are untouched
        assert all(torch.equal(v, _set_state(bn, name)[k]) for k, v in before[name].items())
    assert not torch.equal(before["2_6"]["running_mean"], _set_state(bn, "2_6")["running_mean"])
    sn.eval()
    for b, a in combos.values():
        sn.set_choices({"b": b, "a": a})
        with torch.no_grad():
            assert_close(fxrazor.freeze(sn)(x), sn(x))
    sn.unit("a").alter_candidates_of_switchbn([1.0])  # b's candidates stay
    assert sorted(bn.candidate_bn) == ["2_6"]


def test_too_many_combinations_keep_shared_statistics(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slimmable_unit, "MAX_SETS", 3)
    with caplog.at_level(logging.WARNING):
        model, x, sn = _cat_supernet()
    assert type(sn.graph_module.get_submodule("bn")) is DynamicBatchNorm2d
    assert caplog.text.count("BatchNorm 'bn' holds channels of 2 units ['b', 'a'] "
                             "(4 combinations of their candidates, over 3)") == 1
    sn.set_choices({u.name: 0.5 for u in sn.units})
    with torch.no_grad():
        assert_close(fxrazor.freeze(sn)(x), sn(x))


SETTINGS = {"no_affine": {"affine": False}, "no_stats": {"track_running_stats": False},
            "cumulative": {"momentum": None, "eps": 1e-3}}
if "bias" in inspect.signature(nn.BatchNorm1d).parameters:  # a newer torch's option
    SETTINGS["no_bias"] = {"bias": False}


@pytest.mark.parametrize("settings", list(SETTINGS.values()), ids=list(SETTINGS))
def test_sets_and_frozen_layers_keep_the_layer_settings(settings: dict) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8, **settings), nn.ReLU(),
                          nn.Linear(8, 2))
    x = torch.randn(6, 5)
    sn = fxrazor.convert(model, x, unit="slimmable", unit_args={"candidate_choices": [3, 8]})
    bn = sn.graph_module.get_submodule("1")
    assert isinstance(bn, SwitchableBatchNorm1d) and bn.widths == [3, 8]
    sn.train().set_choices({"0": 3})
    for _ in range(2):
        sn(x)
    sn.eval()
    frozen = fxrazor.freeze(sn)
    reference = nn.BatchNorm1d(3, **settings).eval()  # the set by hand, same settings
    reference.load_state_dict(bn.candidate_bn["3"].state_dict())
    static = frozen.get_submodule("1")
    assert repr(static) == repr(reference)
    h = torch.randn(6, 3)
    assert_close(static(h), reference(h))
    with torch.no_grad():
        assert_close(frozen(x), sn(x))
        sn.set_choices({"0": 8})
        assert_close(sn(x), model.eval()(x))
