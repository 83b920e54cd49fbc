"""Choice blocks traced branch by branch (fxrazor.trace.blocks), with a generic expander."""

from __future__ import annotations

import torch
from torch import fx, nn

from fxrazor.trace.blocks import BLOCK_KEY, BRANCH_KEY, BlockCall, Branch, block_join
from fxrazor.trace.tracer import trace_model

__all__: list[str] = []


class Choice(nn.Module):
    """A stand-in block: runs its first branch; the expander lists all of them."""

    def __init__(self, **branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleDict(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return next(iter(self.branches.values()))(x)


class Pair(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


def _expand(module: nn.Module) -> list[Branch] | None:
    if isinstance(module, Choice):
        return [Branch(name, m) for name, m in module.branches.items()]
    return None


def _model(**branches: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 1), Choice(**branches), nn.ReLU())


def test_every_branch_is_traced_on_the_block_input_and_tagged() -> None:
    model = _model(a=nn.Conv2d(4, 4, 1), b=nn.Sequential(nn.Conv2d(4, 2, 1), nn.Conv2d(2, 4, 1)))
    traced = trace_model(model, torch.randn(1, 3, 4, 4), expand_block=_expand)
    nodes = {n.name: n for n in traced.graph_module.graph.nodes}
    tags = {n.target: n.meta.get(BRANCH_KEY) for n in nodes.values() if n.op == "call_module"}
    assert tags == {"0": None, "1.branches.a": ("1", "a"), "1.branches.b.0": ("1", "b"),
                    "1.branches.b.1": ("1", "b"), "2": None}
    join = next(n for n in nodes.values() if n.target is block_join)
    call: BlockCall = join.meta[BLOCK_KEY]
    assert call.path == "1" and call.names == ("a", "b") and isinstance(call.module, Choice)
    assert call.inputs == (nodes["_0"], nodes["_0"]) and call.args == (nodes["_0"],)
    assert [a.target for a in join.args] == ["1.branches.a", "1.branches.b.1"]
    assert tuple(join.meta["tensor_meta"].shape) == (1, 4, 4, 4)


def test_without_an_expander_the_block_is_traced_through() -> None:
    model = _model(a=nn.Conv2d(4, 4, 1), b=nn.Conv2d(4, 4, 3, padding=1))
    traced = trace_model(model, torch.randn(1, 3, 4, 4))
    assert [n.target for n in traced.graph_module.graph.nodes if n.op == "call_module"] == \
        ["0", "1.branches.a", "2"]
    assert all(BRANCH_KEY not in n.meta for n in traced.graph_module.graph.nodes)


def test_a_branch_that_returns_no_single_tensor_makes_the_block_opaque() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), Choice(a=Pair()))
    traced = trace_model(model, torch.randn(1, 3, 4, 4), expand_block=_expand)
    assert "1" in traced.opaque and "does not return one tensor" in traced.opaque["1"]
    assert [n.target for n in traced.graph_module.graph.nodes if n.op == "call_module"] == \
        ["0", "1"]


def test_a_block_named_a_leaf_is_not_expanded() -> None:
    model = _model(a=nn.Conv2d(4, 4, 1))
    traced = trace_model(model, torch.randn(1, 3, 4, 4), leaf_modules=["1"],
                         expand_block=_expand)
    graph: fx.Graph = traced.graph_module.graph
    assert [n.target for n in graph.nodes if n.op == "call_module"] == ["0", "1", "2"]
    assert not any(n.target is block_join for n in graph.nodes)
