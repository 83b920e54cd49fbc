"""build_graph_module builds what fx.GraphModule(root, graph) builds: the same modules,
parameters and buffers under the same names, in the same order, and the same outputs."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import fx, nn

from fxrazor.trace.graph_module import build_graph_module
from fxrazor.trace.tracer import FxRazorTracer


class _UnusedHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
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


class _Attributes(nn.Module):
    """A plain tensor attribute, a non-persistent buffer, a parameter read from a called
    layer, a layer used only through its parameters, and a cache written in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(4, 4))
        self.proj = nn.Linear(4, 4)
        self.offset = torch.ones(4)
        self.register_buffer("scale", torch.full((4,), 2.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x) + self.block[0].bias
        self.block.last = y  # left behind on the traced module, never copied
        y = nn.functional.linear(y, self.proj.weight, self.proj.bias)
        return (y + self.offset) * self.scale


class _LateWhole(nn.Module):
    """A container's parameter is read before the container itself is called."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(4, 4))
        self.wrap = _Wrap()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wrap(x + self.wrap.fc.bias) + self.inner(x)


class _Wrap(nn.Linear):
    def __init__(self) -> None:
        super().__init__(4, 4)
        self.fc = nn.Linear(4, 4)


CASES = {
    "resnet18": (lambda: torchvision.models.resnet18(), (1, 3, 32, 32)),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(), (1, 3, 32, 32)),
    "unused_head": (_UnusedHead, (2, 4)),
    "shared": (_Shared, (2, 4)),
    "attributes": (_Attributes, (2, 4)),
    "late_whole": (_LateWhole, (2, 4)),
}


def _layout(module: nn.Module) -> list:
    """Everything about the module tree that the two constructions could differ in."""
    def shared(m: nn.Module) -> int | None:  # layers are shared with the model; bare
        return None if type(m) is nn.Module else id(m)  # containers are new on both sides

    return [
        [(n, type(m).__name__, shared(m), m.training) for n, m in
         module.named_modules(remove_duplicate=False) if n],
        [(n, id(t)) for n, t in module.named_parameters(remove_duplicate=False)],
        [(n, id(t)) for n, t in module.named_buffers(remove_duplicate=False)],
        list(module.state_dict(keep_vars=True)),
    ]


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_tree_and_output_as_fx(case: str) -> None:
    build, shape = CASES[case]
    model = build().eval()
    graph = FxRazorTracer().trace(model)
    expected = fx.GraphModule(model, graph)
    built = build_graph_module(model, graph, "Net")
    assert _layout(built) == _layout(expected)
    assert built.training == expected.training
    x = torch.randn(shape)
    torch.testing.assert_close(built(x), expected(x), rtol=0, atol=0)
    assert not hasattr(built.get_submodule("block") if case == "attributes" else built, "last")


def test_registration_hooks_see_what_fx_installs() -> None:
    from torch.nn.modules.module import register_module_module_registration_hook

    model = _Attributes().eval()
    graph = FxRazorTracer().trace(model)
    seen: list[tuple[str, str]] = []
    handle = register_module_module_registration_hook(
        lambda parent, name, child: seen.append((name, type(child).__name__)))
    try:
        fx.GraphModule(model, graph)
        by_fx, seen[:] = list(seen), []
        build_graph_module(model, graph, "Net")
    finally:
        handle.remove()
    assert seen == by_fx and ("block", "Module") in seen


def test_containers_are_bare_modules_with_their_own_registries() -> None:
    model = torchvision.models.resnet18().eval()
    built = build_graph_module(model, FxRazorTracer().trace(model), "Net")
    containers = [m for _, m in built.named_modules() if type(m) is nn.Module]
    assert len(containers) > 2
    fresh = nn.Module()
    for c in containers:
        assert {k: type(v) for k, v in vars(c).items() if k != "_modules"} == \
            {k: type(v) for k, v in vars(fresh).items() if k != "_modules"}
        assert c.training is True  # fx leaves its bare containers in training mode
    registries = [id(v) for c in containers for k, v in vars(c).items()
                  if isinstance(v, (dict, set)) and k != "_modules"]
    assert len(registries) == len(set(registries))  # none shared between containers
