"""One choices dict over every mutable of a supernet: channel units, op mutables (alias
groups), differentiable ops and routes, and recorded value mutables."""

from __future__ import annotations

import copy
import pickle
import random

import pytest
import torch
import torch.nn.functional as F
from search_models import KEYS, SearchNet, search_supernet
from torch import nn

import fxrazor
from fxrazor.errors import AliasConflictError, InvalidChoiceError, UnknownUnitError
from fxrazor.mutables import OneShotMutableOP, OneShotMutableValue


def _gm(sn, path):
    return sn.graph_module.get_submodule(path)


def test_keys_and_order_are_stable() -> None:
    sn, _ = search_supernet(0)
    assert list(sn.choices()) == KEYS
    assert sn.choices() == {"stem": 8, "expand": 16, "project": 8, "shared": "conv3x3",
                            "solo": "pool",
                            "dop": "id", "route": ["skip", "conv"], "solo.kernel_size": 7,
                            "head.width": 8}
    other, _ = search_supernet(1)  # another run, other weights: the same keys, same order
    assert list(other.choices()) == KEYS
    assert list(sn.sample_choices()) == KEYS


def test_set_choices_applies_everything() -> None:
    sn, x = search_supernet()
    kernel = sn.__dict__["_fxr_value_mutables"]["solo.kernel_size"]
    new = {"stem": 5, "expand": 9, "project": 6, "shared": "conv1x1", "solo": "conv",
           "dop": "relu", "route": ["conv", "pool"], "solo.kernel_size": 3, "head.width": 4}
    sn.set_choices(new)
    assert sn.choices() == new
    assert [u.activated_channels for u in sn.units] == [5, 9, 6]
    assert _gm(sn, "op1").current_choice == _gm(sn, "op2").current_choice == "conv1x1"
    assert _gm(sn, "solo").current_choice == "conv"
    assert _gm(sn, "route").current_choice == ["conv", "pool"]
    assert kernel.current_choice == 3
    assert sn(x).shape == (2, 4, 6, 6)


def test_forward_follows_the_op_choices() -> None:
    # the oracle: the same computation written out with the chosen candidates and the
    # softmax-weighted sums of the arch params, at full width
    sn, x = search_supernet()
    sn.set_choices({"shared": "conv1x1", "solo": "conv"})
    with torch.no_grad():
        sn.arch_params()["dop"].copy_(torch.tensor([0.3, -1.0, 2.0]))
        sn.arch_params()["route"].copy_(torch.tensor([1.0, 0.5, -0.5]))
    ref = SearchNet()
    ref.load_state_dict({k.removeprefix("graph_module."): v for k, v in sn.state_dict().items()
                         if k.startswith("graph_module.")})
    h = ref.project(torch.relu(ref.expand(ref.stem(x))))
    a = ref.op1.candidates["conv1x1"](h)
    b = ref.op2.candidates["conv1x1"](a)
    c = ref.solo.candidates["conv"](b)
    w = F.softmax(torch.tensor([0.3, -1.0, 2.0]), 0)
    d = w[0] * c + w[1] * torch.relu(c) + w[2] * ref.dop._candidates["conv"](c)
    r = F.softmax(torch.tensor([1.0, 0.5, -0.5]), 0)
    e = r[0] * a + r[1] * ref.route._edges["conv"](c) + r[2] * F.max_pool2d(d, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(sn(x), ref.head(e))


def test_bad_op_choice_names_the_mutable_and_changes_nothing() -> None:
    sn, _ = search_supernet()
    before = sn.choices()
    with pytest.raises(InvalidChoiceError, match=r"'solo'.*OneShotMutableOP.*'nope'"):
        sn.set_choices({"stem": 4, "shared": "id", "solo": "nope", "head.width": 4})
    assert sn.choices() == before
    assert _gm(sn, "op1").current_choice == "conv3x3"
    with pytest.raises(InvalidChoiceError, match="'stem'"):  # a bad width, good ops
        sn.set_choices({"shared": "id", "solo.kernel_size": 5, "stem": 99})
    assert sn.choices() == before
    with pytest.raises(InvalidChoiceError, match="head.width"):
        sn.set_choices({"shared": "id", "head.width": 5})
    with pytest.raises(InvalidChoiceError, match=r"'route'.*DiffChoiceRoute.*duplicates"):
        sn.set_choices({"dop": "conv", "route": ["skip", "skip"]})
    assert sn.choices() == before
    assert [u.activated_channels for u in sn.units] == [8, 16, 8]


def test_unknown_keys_name_the_valid_ones() -> None:
    sn, _ = search_supernet()
    with pytest.raises(UnknownUnitError, match=r"'nope'.*'stem'.*'shared'.*'head.width'"):
        sn.set_choices({"shared": "id", "nope": 1})
    with pytest.raises(UnknownUnitError, match=r"'op1' is in group 'shared'"):
        sn.set_choices({"op1": "id"})
    with pytest.raises(UnknownUnitError, match=r"'dop.kernel_size' is in group "
                                               r"'solo.kernel_size'"):
        sn.set_choices({"dop.kernel_size": 3})
    assert sn.choices()["shared"] == "conv3x3"


def test_alias_group_shares_one_choice() -> None:
    sn, _ = search_supernet()
    assert sn.nas_mutator.search_groups["shared"] == [_gm(sn, "op1"), _gm(sn, "op2")]
    sn.set_choices({"shared": "id"})
    assert [_gm(sn, p).current_choice for p in ("op1", "op2")] == ["id", "id"]


def test_conflicting_alias_fails_when_the_supernet_is_built() -> None:
    model = nn.Sequential(
        OneShotMutableOP({"a": nn.ReLU(), "b": nn.Identity()}, alias="blk"),
        OneShotMutableOP({"a": nn.ReLU(), "c": nn.Tanh()}, alias="blk"))
    with pytest.raises(AliasConflictError, match=r"'blk'.*'0'.*'1'.*\['a', 'c'\]"):
        fxrazor.convert(model, torch.randn(1, 2))


def test_conflicting_value_alias_and_alias_on_a_unit_name() -> None:
    sn, _ = search_supernet()
    sn.__dict__["_fxr_value_mutables"] = {
        "a.k": OneShotMutableValue([3, 5], alias="k"),
        "b.k": OneShotMutableValue([3, 7], alias="k")}
    with pytest.raises(AliasConflictError, match=r"'k'.*'a.k'.*'b.k'"):
        sn.choices()
    sn.__dict__["_fxr_value_mutables"] = {"a.k": OneShotMutableValue([3, 5], alias="stem")}
    with pytest.raises(AliasConflictError, match="'stem'.*unit"):
        sn.choices()
    shared = {"a.k": OneShotMutableValue([3, 5], alias="k"),
              "b.k": OneShotMutableValue([3, 5], alias="k")}
    sn.__dict__["_fxr_value_mutables"] = shared
    assert list(sn.choices())[-1] == "k"
    sn.set_choices({"k": 3})
    assert [m.current_choice for m in shared.values()] == [3, 3]


def test_fixed_mutables_are_left_out() -> None:
    sn, _ = search_supernet()
    kernel = sn.__dict__["_fxr_value_mutables"]["solo.kernel_size"]
    kernel.fix_chosen(5)
    _gm(sn, "solo").fix_chosen("conv")
    sn.prepare_mutators()  # op mutables are found when the mutators are prepared
    assert list(sn.choices()) == ["stem", "expand", "project", "shared", "dop", "route",
                                  "head.width"]


def test_sample_choices_max_min() -> None:
    sn, _ = search_supernet()
    with torch.no_grad():
        sn.arch_params()["dop"].copy_(torch.tensor([0.0, 5.0, 1.0]))
        sn.arch_params()["route"].copy_(torch.tensor([1.0, 0.0, 3.0]))
    # ops: most / fewest parameters (conv3x3 > conv1x1 > id; conv > pool); differentiable
    # ops: the argmax of the arch param for both, a route's two best edges in edge order
    assert sn.sample_choices("max") == {
        "stem": 8, "expand": 16, "project": 8, "shared": "conv3x3", "solo": "conv", "dop": "relu",
        "route": ["skip", "pool"], "solo.kernel_size": 7, "head.width": 8}
    assert sn.sample_choices("min") == {
        "stem": 1, "expand": 1, "project": 1, "shared": "id", "solo": "pool", "dop": "relu",
        "route": ["skip", "pool"], "solo.kernel_size": 3, "head.width": 4}
    sn.nas_mutator.set_max_choices()
    assert sn.choices()["shared"] == "conv3x3" and sn.choices()["head.width"] == 8
    with pytest.raises(InvalidChoiceError, match="random"):
        sn.sample_choices("largest")


def test_sample_choices_random_is_seeded_and_valid() -> None:
    sn, _ = search_supernet()
    draws = []
    for _ in range(2):
        random.seed(3)
        torch.manual_seed(3)
        draws.append([sn.sample_choices() for _ in range(30)])
    assert draws[0] == draws[1]
    seen = {k: {repr(d[k]) for d in draws[0]} for k in KEYS}
    assert seen["shared"] == {"'conv3x3'", "'conv1x1'", "'id'"}
    assert seen["solo.kernel_size"] == {"3", "5", "7"}
    assert len(seen["route"]) > 1 and len(seen["dop"]) > 1  # drawn from softmax(~0)
    before = sn.choices()
    assert sn.choices() == before  # sampling applies nothing
    sn.set_choices(draws[0][-1])
    assert sn.choices() == draws[0][-1]


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_keep_their_own_bound_arch_params(how: str) -> None:
    sn, x = search_supernet()
    sn.set_choices({"shared": "conv1x1", "head.width": 4})
    dup = copy.deepcopy(sn) if how == "deepcopy" else pickle.loads(pickle.dumps(sn))
    assert dup.choices() == sn.choices()
    params = dup.arch_params()
    assert params["dop"] is not sn.arch_params()["dop"]
    assert _gm(dup, "dop").__dict__["_bound_arch_param"] is params["dop"]
    torch.testing.assert_close(dup(x), sn(x))
    dup.set_choices({"shared": "id", "head.width": 8})
    assert sn.choices()["shared"] == "conv1x1" and sn.choices()["head.width"] == 4
    with torch.no_grad():
        params["dop"].add_(1.0)
    assert not torch.equal(params["dop"], sn.arch_params()["dop"])


def test_a_supernet_saved_before_the_mutators_gets_them_on_first_use() -> None:
    sn, x = search_supernet()
    for name in ("_fxr_channel_mutator", "_fxr_nas_mutator"):
        del sn.__dict__[name]
    del sn._modules["arch_param_dict"]
    out = sn(x)  # binds fresh arch params
    assert out.shape == (2, 4, 6, 6)
    assert list(sn.choices()) == KEYS and list(sn.arch_params()) == ["dop", "route"]
