"""Tests for the differentiable choice route (fxrazor.mutables.diff_mutable.DiffChoiceRoute)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from nas_ops import Scale, softmax_by_hand
from torch import nn

from fxrazor.errors import (
    FixedMutableError,
    InvalidChoiceError,
    MutableArgumentError,
)
from fxrazor.mutables.base import DumpChosen
from fxrazor.mutables.diff_mutable import DiffChoiceRoute


def make_route(**kwargs: Any) -> tuple[DiffChoiceRoute, list[Scale]]:
    edges = [Scale(float(i + 1)) for i in range(4)]
    route = DiffChoiceRoute({f"e{i}": edge for i, edge in enumerate(edges)}, **kwargs)
    return route, edges


def route_inputs() -> list[torch.Tensor]:
    return [torch.full((2,), 10.0**i) for i in range(4)]  # tells the inputs apart


def test_route_plain_sum_applies_each_edge_to_its_own_input() -> None:
    route, _ = make_route()
    inputs = route_inputs()
    # edge i multiplies input i (= 10**i) by i + 1.
    expected = torch.full((2,), 1.0 + 20.0 + 300.0 + 4000.0)
    assert torch.equal(route(inputs), expected)  # no arch_param needed
    # built without arch params, a given arch_param is ignored (MMRazor's forward)
    assert torch.equal(route(inputs, torch.tensor([9.0, 0.0, 0.0, 0.0])), expected)
    assert torch.equal(route.forward_all(tuple(inputs)), expected)


def test_route_with_arch_param_matches_hand_computation() -> None:
    route, _ = make_route(with_arch_param=True)
    values = [0.4, -0.2, 1.0, 0.0]
    arch_param = nn.Parameter(torch.tensor(values))
    p = softmax_by_hand(values)
    expected = sum(p[i] * (i + 1) * 10.0**i for i in range(4))
    out = route(route_inputs(), arch_param)
    torch.testing.assert_close(out, torch.full((2,), expected))
    out.sum().backward()
    assert arch_param.grad is not None and arch_param.grad.abs().sum() > 0


def test_route_without_arch_param_runs_forward_all() -> None:
    # the reference's forward(x, arch_param=None): with no arch_param (none bound) the
    # route sums every edge unweighted, forward_all; before, it raised
    route, _ = make_route(with_arch_param=True)
    expected = torch.full((2,), 1.0 + 20.0 + 300.0 + 4000.0)
    assert torch.equal(route(route_inputs()), expected)
    route.set_forward_args(torch.zeros(4))  # a bound one is used: 1/4 each
    torch.testing.assert_close(route(route_inputs()), expected / 4)


def test_route_doc_example_shapes() -> None:
    torch.manual_seed(0)
    edges = nn.ModuleDict(
        {
            "first": nn.Conv2d(8, 8, 3, 1, 1),
            "second": nn.Conv2d(8, 8, 5, 1, 2),
            "third": nn.MaxPool2d(3, 1, 1),
            "fourth": nn.MaxPool2d(5, 1, 2),
            "fifth": nn.MaxPool2d(7, 1, 3),
        }
    )
    route = DiffChoiceRoute(edges, with_arch_param=True)
    arch_param = nn.Parameter(torch.randn(5))
    x = [torch.randn(2, 8, 6, 6) for _ in range(5)]
    p = torch.softmax(arch_param.detach(), dim=0)
    expected = sum(p[i] * edge(x[i]) for i, edge in enumerate(edges.values()))
    out = route.forward_arch_param(x, arch_param)
    assert out.shape == (2, 8, 6, 6)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(
    "inputs",
    [route_inputs()[:3], route_inputs() + [torch.ones(2)], torch.ones(4, 2), []],
    ids=["too-few", "too-many", "tensor", "empty"],
)
def test_route_rejects_wrong_inputs(inputs: Any) -> None:
    route, _ = make_route()
    with pytest.raises(MutableArgumentError, match="4 inputs"):
        route(inputs)


def test_route_sample_choice_picks_the_top_edges() -> None:
    route, _ = make_route()
    assert route.sample_choice(torch.tensor([0.1, 2.0, -1.0, 0.5])) == ["e1", "e3"]
    route3, _ = make_route(num_chosen=3)
    assert route3.sample_choice(torch.tensor([3.0, 2.0, -1.0, 2.5])) == ["e0", "e3", "e1"]
    with pytest.raises(MutableArgumentError):
        route.sample_choice(torch.zeros(3))


def test_route_fix_chosen_keeps_edges_and_their_inputs() -> None:
    route, _ = make_route()
    route.fix_chosen(["e2", "e0"])
    assert route.is_fixed
    assert route.choices == ["e0", "e2"]
    assert route.current_choice == ["e0", "e2"]
    expected = torch.full((2,), 1.0 + 300.0)  # edge 0 on input 0, edge 2 on input 2
    assert torch.equal(route(route_inputs()), expected)
    assert torch.equal(route.forward_fixed(route_inputs()), expected)
    assert torch.equal(route(route_inputs(), torch.zeros(4)), expected)
    assert route.sample_choice(torch.tensor([0.0, 0.0, 0.0, 9.0])) == ["e0", "e2"]
    route.fix_chosen(["e0", "e2"])  # same edges: nothing to do
    route.current_choice = ["e2", "e0"]
    with pytest.raises(FixedMutableError):
        route.fix_chosen(["e1", "e2"])
    with pytest.raises(FixedMutableError):
        route.current_choice = ["e0"]
    with pytest.raises(MutableArgumentError):
        route(route_inputs()[:2])  # a fixed route still takes one input per original edge
    expected_dump = DumpChosen(["e0", "e2"], {"all_choices": ["e0", "e1", "e2", "e3"]})
    assert route.dump_chosen() == expected_dump


def test_route_fix_chosen_removes_parameters() -> None:
    torch.manual_seed(0)
    edges = {"a": nn.Conv2d(2, 2, 1), "b": nn.Conv2d(2, 2, 3, padding=1), "c": nn.Identity()}
    route = DiffChoiceRoute(edges)
    assert {k.split(".")[1] for k in route.state_dict()} == {"a", "b"}
    route.fix_chosen(["b", "c"])
    assert set(route.state_dict()) == {"_edges.b.weight", "_edges.b.bias"}
    x = [torch.randn(1, 2, 3, 3) for _ in range(3)]
    torch.testing.assert_close(route(x), edges["b"](x[1]) + x[2])


@pytest.mark.parametrize("bad", ["e0", ["e9"], [], ["e0", "e0"]], ids=str)
def test_route_rejects_bad_chosen(bad: Any) -> None:
    route, _ = make_route()
    with pytest.raises(InvalidChoiceError):
        route.fix_chosen(bad)
    with pytest.raises(InvalidChoiceError):
        route.current_choice = bad
    assert not route.is_fixed and route.num_choices == 4


def test_route_current_choice_defaults_and_order() -> None:
    route, _ = make_route(num_chosen=3)
    assert route.num_chosen == 3
    assert route.current_choice == ["e0", "e1", "e2"]
    route.current_choice = ["e3", "e1"]
    assert route.current_choice == ["e1", "e3"]
    assert route.dump_chosen().chosen == ["e1", "e3"]


@pytest.mark.parametrize(
    "kwargs",
    [{"num_chosen": 0}, {"num_chosen": 5}, {"num_chosen": True}, {"num_chosen": 1.5}]
    + [{"with_arch_param": 1}],
    ids=str,
)
def test_route_rejects_bad_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(MutableArgumentError):
        make_route(**kwargs)


def test_route_rejects_bad_edges() -> None:
    with pytest.raises(MutableArgumentError, match="edge"):
        DiffChoiceRoute({})
    with pytest.raises(MutableArgumentError, match="not an nn.Module"):
        DiffChoiceRoute({"a": nn.Identity(), "b": "maxpool"})  # type: ignore[dict-item]
