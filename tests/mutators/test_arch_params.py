"""The architecture parameters of a supernet's differentiable op mutables: one
ParameterDict, apart from the weights, bound to the blocks, shared within an alias."""

from __future__ import annotations

import pytest
import torch
from search_models import SearchNet, search_supernet
from torch import nn

import fxrazor
from fxrazor.mutables import DiffMutableOP


def test_one_param_per_group_bound_to_its_block() -> None:
    sn, _ = search_supernet()
    params = sn.arch_params()
    assert isinstance(params, nn.ParameterDict)
    assert {k: tuple(p.shape) for k, p in params.items()} == {"dop": (3,), "route": (3,)}
    for key in ("dop", "route"):
        block = sn.graph_module.get_submodule(key)
        assert block.__dict__["_bound_arch_param"] is params[key]
        assert sn.nas_mutator.arch_param(key) is params[key]
        # SearchNet binds zeros before convert: the supernet's param starts as their copy
        assert torch.equal(params[key].detach(), torch.zeros(3))


def test_new_arch_params_copy_the_models_alphas_else_start_small_and_random() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6)
    model = SearchNet()
    alphas = torch.tensor([0.5, -1.0, 2.0])
    model.dop.set_forward_args(alphas)
    sn = fxrazor.convert(model, x)
    params = sn.arch_params()
    assert torch.equal(params["dop"].detach(), torch.tensor([0.5, -1.0, 2.0]))
    with torch.no_grad():
        torch.testing.assert_close(sn(x), model(x))  # the model's function, unchanged
        params["dop"].add_(1.0)
    assert torch.equal(alphas, torch.tensor([0.5, -1.0, 2.0]))  # a copy, not the user's
    bare = SearchNet()
    for key in ("dop", "route"):  # no alphas bound: the blocks run every candidate
        del bare.get_submodule(key).__dict__["_bound_arch_param"]
    params = fxrazor.convert(bare, x).arch_params()
    for key in ("dop", "route"):
        assert 0 < float(params[key].detach().abs().max()) < 1e-2  # 1e-3 * randn, as MMRazor


def test_weights_and_arch_params_split_cleanly() -> None:
    sn, x = search_supernet()
    arch = list(sn.arch_params().parameters())
    weights = list(sn.model_params())
    assert {id(p) for p in arch}.isdisjoint({id(p) for p in weights})
    assert {id(p) for p in arch} | {id(p) for p in weights} == {id(p) for p in sn.parameters()}
    weights_before = [p.detach().clone() for p in weights]
    arch_before = [p.detach().clone() for p in arch]
    opt = torch.optim.SGD(sn.arch_params().parameters(), lr=0.5)
    loss = sn(x).square().mean()
    loss.backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in arch)
    opt.step()
    assert all(not torch.equal(p, b) for p, b in zip(arch, arch_before, strict=True))
    assert all(torch.equal(p, b) for p, b in zip(weights, weights_before, strict=True))


def test_state_dict_round_trip() -> None:
    sn, x = search_supernet(0)
    with torch.no_grad():
        sn.arch_params()["dop"].copy_(torch.tensor([0.5, -0.5, 2.0]))
    state = sn.state_dict()
    assert "arch_param_dict.dop" in state and "arch_param_dict.route" in state
    other, _ = search_supernet(1)
    other.load_state_dict(state)
    assert torch.equal(other.arch_params()["dop"], torch.tensor([0.5, -0.5, 2.0]))
    torch.testing.assert_close(other(x), sn(x))


def test_moving_the_supernet_moves_and_rebinds_them() -> None:
    sn, x = search_supernet()
    sn.double()
    assert sn.arch_params()["dop"].dtype == torch.float64
    out = sn(x.double())
    assert out.dtype == torch.float64
    block = sn.graph_module.get_submodule("dop")
    assert block.__dict__["_bound_arch_param"] is sn.arch_params()["dop"]


def test_alias_group_shares_one_arch_param() -> None:
    class Cell(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = DiffMutableOP({"relu": nn.ReLU(), "tanh": nn.Tanh()}, alias="node.0")
            self.b = DiffMutableOP({"relu": nn.ReLU(), "tanh": nn.Tanh()}, alias="node.0")
            for op in (self.a, self.b):
                op.set_forward_args(torch.zeros(2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x))

    x = torch.tensor([[-1.0, 0.5]])
    sn = fxrazor.convert(Cell(), x)
    params = sn.arch_params()
    assert list(params) == ["node:0"]  # a ParameterDict name has no dots
    shared = sn.nas_mutator.arch_param("node.0")
    assert all(sn.graph_module.get_submodule(p).__dict__["_bound_arch_param"] is shared
               for p in ("a", "b"))
    with torch.no_grad():
        shared.copy_(torch.tensor([1.0, 0.0]))
    # by hand: each block gives w0 * relu(v) + w1 * tanh(v), w = softmax([1, 0])
    w0 = torch.exp(torch.tensor(1.0)) / (torch.exp(torch.tensor(1.0)) + 1)
    step = lambda v: w0 * torch.relu(v) + (1 - w0) * torch.tanh(v)  # noqa: E731
    torch.testing.assert_close(sn(x), step(step(x)))
    sn(x).sum().backward()
    assert shared.grad is not None
    assert sn.choices() == {"node.0": "relu"}


def test_new_param_objects_after_a_move_are_bound_on_the_next_forward() -> None:
    sn, x = search_supernet()
    old = sn.arch_params()["dop"]
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        sn.double()  # with this flag, .double()/.to() put in new Parameter objects
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(False)
    new = sn.arch_params()["dop"]
    assert new is not old
    sn(x.double()).sum().backward()
    assert sn.graph_module.get_submodule("dop").__dict__["_bound_arch_param"] is new
    assert new.grad is not None and old.grad is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_cuda_moves_the_arch_params() -> None:
    sn, x = search_supernet()
    sn.to("cuda")
    assert all(p.is_cuda for p in sn.arch_params().parameters())
    sn(x.cuda()).sum().backward()
    assert all(p.grad is not None for p in sn.arch_params().parameters())


def test_unit_arch_params_are_not_weights_either() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.Conv2d(8, 2, 1))
    sn = fxrazor.convert(model, torch.randn(1, 3, 4, 4), unit="dmcp")
    unit_params = {id(p) for p in sn.all_units.parameters()}
    assert unit_params  # DMCP's transition logits
    weights = {id(p) for p in sn.model_params()}
    assert weights.isdisjoint(unit_params)
    assert weights == {id(p) for p in sn.graph_module.parameters()}
