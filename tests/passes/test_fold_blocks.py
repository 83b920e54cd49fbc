"""Folding traced op mutables back into blocks, and freezing them (fold_blocks, nas_blocks)."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

import fxrazor
from fxrazor.mutables.diff_mutable import DiffMutableOP
from fxrazor.mutables.mutable_module import OneShotMutableOP
from fxrazor.ops import DynamicOp

__all__: list[str] = []


class Scaled(nn.Module):
    """A candidate that reads a constant tensor and a literal width."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, c).view(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale


class Net(nn.Module):
    def __init__(self, block: nn.Module, c: int = 6) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 1)
        self.block = block
        self.head = nn.Conv2d(c, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


def _one_shot(c: int = 6) -> OneShotMutableOP:
    return OneShotMutableOP({"k1": nn.Conv2d(c, c, 1), "k3": nn.Sequential(
        nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, c, 1)), "scaled": Scaled(c)})


def test_candidates_become_graphs_of_dynamic_ops_and_a_layer_stays_a_layer() -> None:
    torch.manual_seed(0)
    model, x = Net(_one_shot()).eval(), torch.randn(1, 3, 5, 5)
    sn = fxrazor.convert(model, x)
    op = sn.graph_module.block
    assert isinstance(op, OneShotMutableOP) and op.choices == ["k1", "k3", "scaled"]
    assert isinstance(op.candidates["k1"], DynamicOp)  # one layer: that layer
    assert isinstance(op.candidates["k3"], fx.GraphModule)
    assert isinstance(op.candidates["k3"].get_submodule("0"), DynamicOp)
    assert [n.target for n in sn.graph_module.graph.nodes if n.op == "call_module"] == \
        ["stem", "block", "head"]
    keys = set(sn.graph_module.state_dict())
    # the model's names, plus the sliced parameter's own (as in a supernet without blocks)
    assert keys - set(model.state_dict()) == {
        "block._candidates.scaled.fxr_param_block__candidates_scaled_scale.value"}
    assert set(model.state_dict()) <= keys
    for name in op.choices:
        op.current_choice = model.block.current_choice = name
        sn.set_choices({"stem": 3})
        frozen = fxrazor.freeze(sn)
        torch.testing.assert_close(frozen(x), sn(x))
        assert frozen.get_submodule("stem").out_channels == 3
        with sn.full_width():
            torch.testing.assert_close(sn.graph_module(x), model(x))


def test_every_candidate_at_once_when_there_is_no_choice() -> None:
    torch.manual_seed(0)
    model, x = Net(_one_shot()).eval(), torch.randn(1, 3, 5, 5)
    sn = fxrazor.convert(model, x)
    sn.graph_module.block.current_choice = model.block.current_choice = None
    torch.testing.assert_close(sn(x), model(x))


def test_convert_in_place_shares_the_weights_and_keeps_the_users_op() -> None:
    torch.manual_seed(0)
    model, x = Net(_one_shot()).eval(), torch.randn(1, 3, 5, 5)
    expected = model(x)
    sn = fxrazor.convert_(model, x)
    op = sn.graph_module.block
    assert op is not model.block and type(model.block.candidates["k3"]) is nn.Sequential
    assert op.candidates["k3"].get_submodule("0").weight is model.block.candidates["k3"][0].weight
    torch.testing.assert_close(sn(x), expected)


def test_a_fixed_op_keeps_its_candidate() -> None:
    torch.manual_seed(0)
    model, x = Net(_one_shot()).eval(), torch.randn(1, 3, 5, 5)
    model.block.fix_chosen("k3")
    sn = fxrazor.convert(model, x)
    assert sn.graph_module.block.choices == ["k3"]
    sn.set_choices({"block._candidates.k3.0": 2})
    torch.testing.assert_close(fxrazor.freeze(sn)(x), sn(x))


def test_an_explicit_arch_param_keeps_the_op_a_leaf() -> None:
    class Explicit(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)
            self.op = DiffMutableOP({"a": nn.Conv2d(4, 4, 1), "b": nn.Identity()})
            self.alpha = nn.Parameter(torch.zeros(2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.op(self.stem(x), self.alpha))

    model, x = Explicit().eval(), torch.randn(1, 3, 4, 4)
    sn = fxrazor.convert(model, x)
    assert sn.units == []  # the op's channels are pinned, as for any leaf
    torch.testing.assert_close(sn(x), model(x))


def test_an_op_nested_in_a_candidate_stays_a_leaf_inside_it() -> None:
    torch.manual_seed(0)
    inner = OneShotMutableOP({"p": nn.Conv2d(6, 6, 1), "q": nn.Identity()})
    outer = OneShotMutableOP({"seq": nn.Sequential(nn.Conv2d(6, 5, 1), nn.ReLU(),
                                                   nn.Conv2d(5, 6, 1), inner),
                              "id": nn.Identity()})
    model, x = Net(outer).eval(), torch.randn(1, 3, 4, 4)
    sn = fxrazor.convert(model, x)
    assert [u.name for u in sn.units] == ["block._candidates.seq.0"]  # the inner width
    nested = sn.graph_module.block.candidates["seq"].get_submodule("3")
    nested.current_choice = "q"
    sn.set_choices({"block._candidates.seq.0": 2})
    frozen = fxrazor.freeze(sn)
    torch.testing.assert_close(frozen(x), sn(x))
    assert not any(type(m).__module__.startswith("fxrazor") for m in frozen.modules())


@pytest.mark.parametrize("choice", [["a", "b"], "b"])
def test_a_diff_op_freezes_its_choice_as_the_fixed_op_computes(choice) -> None:
    torch.manual_seed(0)
    op = DiffMutableOP({"a": nn.Conv2d(6, 6, 1), "b": nn.Sequential(nn.Conv2d(6, 3, 1),
                                                                   nn.Conv2d(3, 6, 1))})
    op.set_forward_args(torch.tensor([0.3, -0.2]))
    model, x = Net(op).eval(), torch.randn(1, 3, 4, 4)
    sn = fxrazor.convert(model, x)
    torch.testing.assert_close(sn(x), model(x))
    sn.graph_module.block.current_choice = choice
    sn.set_choices({"stem": 4, "block._candidates.b.0": 2})
    frozen = fxrazor.freeze(sn)
    sn.graph_module.block.fix_chosen(choice)
    torch.testing.assert_close(frozen(x), sn(x))
