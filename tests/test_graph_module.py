"""Adopting a private copy's module tree gives the GraphModule the standard construction
gives: the same parameters and buffers under the same names, and the same outputs."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import fx, nn

from fxrazor.graph_module import build_graph_module
from fxrazor.tracer import FxRazorTracer


class _UnusedHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.aux = nn.Linear(4, 2)  # never called

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = self.a  # one layer under two names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


class _PlainTensor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.offset = torch.ones(4)  # a plain attribute, not a buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + self.offset


class _UnusedParam(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.spare = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class _FunctionalUse(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.scale = nn.Parameter(torch.full((4,), 2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.proj.weight, self.proj.bias) * self.scale


def _both(model: nn.Module) -> tuple[fx.GraphModule, fx.GraphModule, nn.Module]:
    graph = FxRazorTracer().trace(model)
    standard = fx.GraphModule(model, graph)
    return standard, build_graph_module(model, graph, "Net", adopt=True), model


def _state(module: nn.Module) -> dict[str, int]:
    return {name: id(t) for name, t in (*module.named_parameters(remove_duplicate=False),
                                         *module.named_buffers(remove_duplicate=False))}


@pytest.mark.parametrize("build", [
    lambda: torchvision.models.resnet18(),
    lambda: torchvision.models.mobilenet_v3_small(),
    lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),
    _FunctionalUse,
], ids=["resnet18", "mobilenet_v3_small", "sequential", "functional"])
def test_adopted_tree_has_the_standard_state_and_output(build) -> None:
    standard, adopted, model = _both(build().eval())
    assert adopted._modules is model._modules
    assert _state(adopted) == _state(standard)
    x = torch.randn(1, 4) if isinstance(model, _FunctionalUse) else torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(adopted(x), standard(x), rtol=0, atol=0)


@pytest.mark.parametrize("cls", [_UnusedHead, _Shared, _PlainTensor, _UnusedParam])
def test_tree_with_anything_unused_or_unregistered_is_copied(cls) -> None:
    standard, built, model = _both(cls().eval())
    assert _state(built) == _state(standard)
    assert built._modules is not model._modules
    x = torch.randn(2, 4)
    torch.testing.assert_close(built(x), model(x), rtol=0, atol=0)


def test_not_adopted_unless_asked() -> None:
    model = nn.Sequential(nn.Linear(2, 2))
    gm = build_graph_module(model, FxRazorTracer().trace(model), "Net")
    assert gm._modules is not model._modules
    assert gm.get_submodule("0") is model[0]
