"""Value mutables bound to a supernet (``fxrazor.value_binding``): attention head counts,
MLP ratios and the embedding dim of an AutoFormer-style encoder; the contract the mutators
read; and the errors, which name the place and the mutable and change nothing.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch
from torch import nn

import fxrazor
from fxrazor.errors import FxRazorError, InvalidArgumentError, InvalidChoiceError
from fxrazor.mutables.derived_mutable import DerivedMutable
from fxrazor.mutables.mutable_value import OneShotMutableValue
from fxrazor.value_binding import bind_unit, bind_value, unbind, value_mutables

D, HEADS, HEAD_DIM = 16, 4, 4


class Block(nn.Module):
    """Pre-norm encoder layer: multi-head attention and a 2x MLP, both residual."""

    def __init__(self) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.attn = nn.MultiheadAttention(D, HEADS, batch_first=True)
        self.fc1, self.act, self.fc2 = nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Linear(8, D)
        self.blocks = nn.Sequential(Block(), Block())
        self.head = nn.Linear(D, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.emb(x)))


@pytest.fixture
def encoder() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return Encoder().eval(), torch.randn(2, 5, 8)


@pytest.fixture
def one_thread():
    """Small tensors run faster on one thread, and far faster on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_head_counts_mlp_ratios_and_embedding_dim(encoder, one_thread) -> None:
    model, x = encoder
    sn = fxrazor.convert(model, x, split_dims="outer")
    head_units = [f"blocks.{i}.attn.q_proj" for i in range(2)]  # one channel per whole head
    assert {u.name: u.num_channels for u in sn.units} == {
        "emb": D, head_units[0]: HEADS, head_units[1]: HEADS, "blocks.0.fc1": 2 * D,
        "blocks.1.fc1": 2 * D}
    heads = [OneShotMutableValue([1, 2, 3, 4]) for _ in range(2)]
    mlp = [OneShotMutableValue([1.0, 1.5, 2.0]) for _ in range(2)]
    embed = OneShotMutableValue([8, 12, 16])
    for i in range(2):
        assert bind_unit(sn, head_units[i], heads[i], attr="heads") == f"{head_units[i]}.heads"
        bind_unit(sn, f"blocks.{i}.fc1", mlp[i], attr="mlp_ratio", scale=D)
    bind_unit(sn, "emb", embed, attr="embed_dim")
    # the bound units leave the units; the supernet's choices are the values now, each at
    # its default, the largest choice (OneShotMutableValue, as MMRazor)
    assert sn.units == []
    assert sn.choices() == {f"{h}.heads": 4 for h in head_units} | {
        "blocks.0.fc1.mlp_ratio": 2.0, "blocks.1.fc1.mlp_ratio": 2.0, "emb.embed_dim": 16}
    assert sorted(value_mutables(sn)) == sorted(
        [f"{h}.heads" for h in head_units] + ["blocks.0.fc1.mlp_ratio",
                                              "blocks.1.fc1.mlp_ratio", "emb.embed_dim"])

    # hand oracle: dropping heads h.. equals zeroing their columns of the output projection
    sn.set_choices({f"{head_units[0]}.heads": 3, f"{head_units[1]}.heads": 1})
    assert [h.current_choice for h in heads] == [3, 1]
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for block, h in zip(zeroed.blocks, (3, 1), strict=True):
            block.attn.out_proj.weight[:, h * HEAD_DIM:] = 0.0
        torch.testing.assert_close(sn(x), zeroed(x), rtol=1e-5, atol=1e-6)

    random.seed(0)
    for _ in range(6):
        for m in [*heads, *mlp, embed]:
            m.current_choice = m.sample_choice()
        with torch.no_grad():
            frozen = fxrazor.freeze(sn)
            torch.testing.assert_close(frozen(x), sn(x), rtol=1e-5, atol=1e-6)
        for i in range(2):
            q = frozen.get_submodule(f"blocks.{i}.attn.q_proj")
            assert q.out_features == heads[i].current_choice * HEAD_DIM
            assert q.in_features == embed.current_choice
            assert frozen.get_submodule(f"blocks.{i}.fc1").out_features == mlp[i].current_choice * D


def test_one_mutable_under_two_keys_and_a_deep_copy() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.Conv2d(6, 6, 5, padding=2, groups=6),
                          nn.Conv2d(6, 6, 5, padding=2, groups=6), nn.Conv2d(6, 2, 1))
    x = torch.randn(1, 3, 8, 8)
    sn = fxrazor.convert(model, x)
    kernel = OneShotMutableValue([3, 5])
    bind_value(sn, "1", "kernel_size", kernel)
    bind_value(sn, "2", "kernel_size", kernel)
    assert value_mutables(sn) == {"1.kernel_size": kernel, "2.kernel_size": kernel}
    twin = copy.deepcopy(sn)
    kernel.current_choice = 3
    frozen, twin_frozen = fxrazor.freeze(sn), fxrazor.freeze(twin)
    assert [frozen.get_submodule(t).kernel_size for t in "12"] == [(3, 3)] * 2
    assert [twin_frozen.get_submodule(t).kernel_size for t in "12"] == [(5, 5)] * 2
    twin_kernel = value_mutables(twin)["1.kernel_size"]
    assert twin_kernel is value_mutables(twin)["2.kernel_size"] and twin_kernel is not kernel
    assert twin.value_mutable_dict["1:kernel_size"] is twin_kernel  # one entry, the copy's
    assert list(twin.value_mutable_dict) == ["1:kernel_size"]


def _bound_net() -> tuple[fxrazor.Supernet, OneShotMutableValue, OneShotMutableValue]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 5, padding=2, groups=8),
                          nn.Conv2d(8, 4, 1))
    sn = fxrazor.convert(model, torch.randn(1, 3, 6, 6))
    kernel, width = OneShotMutableValue([3, 5]), OneShotMutableValue([4, 8])
    bind_value(sn, "1", "kernel_size", kernel)
    bind_unit(sn, "0", width)
    return sn, kernel, width


def test_bound_values_travel_in_the_exported_subnet() -> None:
    sn, kernel, width = _bound_net()
    weights = set(sn.state_dict())
    kernel.current_choice, width.current_choice = 3, 4
    config, _ = fxrazor.export_fix_subnet(sn)
    assert config["value_mutable_dict.1:kernel_size"] == {"chosen": 3,
                                                          "meta": {"all_choices": [3, 5]}}
    assert config["value_mutable_dict.0:width"]["chosen"] == 4
    twin, twin_kernel, twin_width = _bound_net()  # the same weights, its own mutables
    fxrazor.load_fix_subnet(twin, config)
    assert (twin_kernel.current_choice, twin_width.current_choice) == (3, 4)
    assert twin_kernel.is_fixed and twin.choices() == {}
    frozen = fxrazor.freeze(twin)
    assert frozen.get_submodule("1").kernel_size == (3, 3)
    assert frozen.get_submodule("0").out_channels == 4
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), sn(x))
    unbind(sn, "1.kernel_size")
    assert list(sn.value_mutable_dict) == ["0:width"]
    unbind(sn, "0.width")
    assert "value_mutable_dict" not in sn._modules and set(sn.state_dict()) == weights


def test_a_conv_without_units_becomes_dynamic_when_bound() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 3, 5, padding=2)  # input and output pinned: no unit, a static layer
    x = torch.randn(1, 3, 7, 7)
    sn = fxrazor.convert(nn.Sequential(conv), x)
    kernel = OneShotMutableValue([1, 3, 5], default_value=3)
    bind_value(sn, "0", "kernel_size", kernel)
    hand = nn.Conv2d(3, 3, 3, padding=1)
    with torch.no_grad():
        hand.weight.copy_(conv.weight[:, :, 1:4, 1:4])
        hand.bias.copy_(conv.bias)
        torch.testing.assert_close(sn(x), hand(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fxrazor.freeze(sn)(x), hand(x), rtol=1e-5, atol=1e-6)


@pytest.fixture
def small() -> tuple[fxrazor.supernet.Supernet, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 7, padding=3, groups=8),
                          nn.Conv2d(8, 8, 7, padding=1), nn.ConvTranspose2d(8, 4, 3),
                          nn.Flatten(), nn.LazyLinear(5))
    x = torch.randn(1, 3, 9, 9)
    model(x)
    return fxrazor.convert(model, x), x


def _state(sn) -> tuple:
    """What a failed bind must leave as it was."""
    return (value_mutables(sn), [(u.name, u.is_mutable, "driven_by" in u.__dict__)
                                 for u in sn.every_unit()],
            [(n, type(m), dict(getattr(m, "mutable_attrs", {})))
             for n, m in sn.graph_module.named_modules()])


@pytest.mark.parametrize(("target", "attr", "values", "words"), [
    ("5", "kernel_size", [1, 3], "'5' is a Linear"),
    ("1", "stride", [1, 2], "'stride' is not a searchable layer attribute"),
    ("9", "kernel_size", [3], "no layer '9'"),
    ("1", "kernel_size", [3, 9], r"its kernel is \(7, 7\)"),
    ("1", "kernel_size", [4, 7], "no centre"),
    ("2", "kernel_size", [3, 7], "not same-padded"),
    ("3", "kernel_size", [1, 3], "ConvTranspose2d"),
])
def test_bad_layer_bindings_name_the_place_and_change_nothing(small, target, attr, values,
                                                              words) -> None:
    sn, x = small
    before, out = _state(sn), sn(x)
    mutable = OneShotMutableValue(values)
    with pytest.raises(InvalidArgumentError, match=words) as info:
        bind_value(sn, target, attr, mutable)
    assert f"{target}.{attr}" in str(info.value) and "OneShotMutableValue" in str(info.value)
    assert _state(sn) == before
    assert torch.equal(sn(x), out)


@pytest.mark.parametrize(("unit", "mutable", "scale", "error", "words"), [
    ("nope", OneShotMutableValue([2]), 1, InvalidArgumentError, "no unit 'nope'"),
    ("0", OneShotMutableValue([4, 100]), 1, InvalidChoiceError, r"\[1, 8\]"),
    ("0", OneShotMutableValue([1.0, 1.5]), 3, InvalidChoiceError, "1.5 \\* 3 = 4.5"),
    ("0", OneShotMutableValue([2, 3]), 0, InvalidArgumentError, "scale must be"),
    ("0", 4, 1, InvalidArgumentError, "must be a mutable"),
])
def test_bad_unit_bindings_name_the_unit_and_change_nothing(small, unit, mutable, scale,
                                                            error, words) -> None:
    sn, x = small
    before = _state(sn)
    with pytest.raises(error, match=words) as info:
        bind_unit(sn, unit, mutable, scale=scale)
    assert f"{unit}.width" in str(info.value)
    assert _state(sn) == before


def test_binding_twice_is_refused_until_unbound(small) -> None:
    sn, x = small
    bind_value(sn, "1", "kernel_size", OneShotMutableValue([3, 7]))
    bind_unit(sn, "0", OneShotMutableValue([2, 8]))
    with pytest.raises(InvalidArgumentError, match="already bound"):
        bind_value(sn, "1", "kernel_size", OneShotMutableValue([5]))
    with pytest.raises(InvalidArgumentError,
                       match=r"already driven.*unbind\(supernet, '0.width'\)"):
        bind_unit(sn, "0", OneShotMutableValue([4]), attr="other")
    unbind(sn, "1.kernel_size")
    unbind(sn, "0.width")
    assert value_mutables(sn) == {} and "0" in [u.name for u in sn.units]
    with pytest.raises(InvalidArgumentError, match="not bound"):
        unbind(sn, "0.width")


def test_a_value_out_of_range_at_forward_names_the_unit(small) -> None:
    """A derived width whose values cannot be listed is checked when it is used."""
    sn, x = small
    holder = {"width": 4}
    bind_unit(sn, "0", DerivedMutable(lambda: holder["width"]))
    assert sn(x).shape == (1, 5)
    holder["width"] = 12
    with pytest.raises(FxRazorError, match=r"unit '0' \(8 channels\) driven by"):
        sn(x)


def test_a_value_alias_that_cannot_share_a_choice_is_refused_at_bind_time() -> None:
    from fxrazor.errors import AliasConflictError

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 5, padding=2),
                          nn.Conv2d(4, 4, 5, padding=2))
    sn = fxrazor.convert(model, torch.randn(1, 3, 6, 6))
    fxrazor.bind_value(sn, "1", "kernel_size", OneShotMutableValue([3, 5], alias="k"))
    layer = sn.graph_module.get_submodule("2")
    with pytest.raises(AliasConflictError, match="'k'"):
        fxrazor.bind_value(sn, "2", "kernel_size", OneShotMutableValue([1, 5], alias="k"))
    assert list(fxrazor.value_mutables(sn)) == ["1.kernel_size"]  # nothing changed
    assert sn.graph_module.get_submodule("2") is layer
    fxrazor.bind_value(sn, "2", "kernel_size", OneShotMutableValue([3, 5], alias="k"))
    assert "k" in sn.choices()  # one shared choice for both kernels
