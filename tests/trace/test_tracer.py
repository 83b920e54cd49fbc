"""The tracer's shortcuts over torch.fx give the graph torch.fx itself gives."""

from __future__ import annotations

import copy
import math
import operator
from collections import namedtuple
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from fxrazor.mutables.base import LightModule
from fxrazor.trace.tracer import FxRazorTracer

Pair = namedtuple("Pair", "a b")


class _ManyArgumentKinds(nn.Module):
    """Calls whose arguments are tuples, lists, dicts, slices, dtypes, devices, Ellipsis,
    named tuples, None and constants, through functions, methods and a leaf layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.register_buffer("table", torch.arange(4.0))
        self.scale = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y = y[..., 1:3, None]
        y = y.permute(0, 2, 3, 4, 1).reshape([y.shape[0], -1, 4])
        y = F.layer_norm(y, (4,), weight=self.scale, bias=None, eps=1e-5)
        y = y.to(dtype=torch.float32, device=torch.device("cpu"))
        y = torch.cat((y, y * self.table), dim=-1)
        pair = Pair(y, 2)
        return operator.getitem(torch.split(pair.a, [3, 5], dim=-1), 0) * pair.b


def _graph_text(tracer: fx.Tracer, model: nn.Module) -> str:
    return str(tracer.trace(model))


def test_graph_matches_torch_fx_for_every_argument_kind() -> None:
    model = _ManyArgumentKinds()
    assert _graph_text(FxRazorTracer(), model) == _graph_text(fx.Tracer(), model)


def test_nodes_record_uses_and_argument_types_as_torch_fx() -> None:
    # the tracer sets arguments after making each node: uses, users and the immutable
    # argument containers must still be what fx.Tracer records
    model = _ManyArgumentKinds()
    ours, theirs = FxRazorTracer().trace(model), fx.Tracer().trace(model)
    for a, b in zip(ours.nodes, theirs.nodes, strict=True):
        assert (type(a.args), type(a.kwargs)) == (type(b.args), type(b.kwargs))
        assert [n.name for n in a.all_input_nodes] == [n.name for n in b.all_input_nodes]
        assert [n.name for n in a.users] == [n.name for n in b.users]


def test_traced_module_computes_what_the_model_computes() -> None:
    model = _ManyArgumentKinds().eval()
    tracer = FxRazorTracer()
    gm = fx.GraphModule(model, tracer.trace(model))
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)


def test_light_module_stores_plain_values_and_runs_property_setters() -> None:
    class Named(LightModule):
        @property
        def label(self) -> str:
            return self._label

        @label.setter
        def label(self, value: str) -> None:
            self._label = value.upper()

    m = Named()
    m.label, m.width, m.sizes = "unit", 8, [1, 2]
    assert (m.label, m.width, m.sizes) == ("UNIT", 8, [1, 2])
    assert "width" in m.__dict__ and "_label" in m.__dict__


def test_light_module_keeps_nn_module_rules_for_registered_names() -> None:
    m = LightModule()
    m.weight = nn.Parameter(torch.ones(2))
    m.register_buffer("stat", torch.zeros(2))
    m.child = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="as parameter"):
        m.weight = 3
    with pytest.raises(TypeError, match="as child module"):
        m.child = 3
    m.weight = None
    m.stat = None
    assert m._parameters["weight"] is None and m._buffers["stat"] is None
    assert "weight" not in m.__dict__ and "stat" not in m.__dict__


@fx.wrap
def _wrapped_scale(x: torch.Tensor, k: float) -> torch.Tensor:
    return x * k


class _Constants(nn.Module):
    """Tensors reached without ``__getattr__``: a plain tensor attribute of a child, also
    held by the root (fx's walk names it by the child, visited later), one inside a list
    (stowed as a new constant), plus math autowrapping, an ``fx.wrap``ped function and a
    concrete argument."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)
        shared = torch.arange(4.0)
        self.inner.offset = shared  # a plain attribute (not a buffer), set on a child
        self.offset_again = shared  # the same tensor under a later name
        self.loose = [torch.ones(4)]

    def forward(self, x: torch.Tensor, flag: bool = True) -> torch.Tensor:
        y = self.inner(x) + self.inner.offset
        y = torch.mul(y, self.loose[0]) * math.sqrt(x.shape[-1])
        return _wrapped_scale(y, 2.0) if flag else y


def _both_routes(model: nn.Module, concrete_args: dict | None = None) -> tuple[str, str]:
    """The graph code of FxRazorTracer's module trace and of fx's own ``trace``."""
    from fxrazor.trace.module_trace import AVAILABLE

    assert AVAILABLE  # this torch has the helpers; otherwise both routes are fx's
    ours, theirs = FxRazorTracer(), FxRazorTracer()
    twin = copy.deepcopy(model)  # tracing may stow constants on the model
    a = ours.trace(model, concrete_args)
    b = fx.Tracer.trace(theirs, twin, concrete_args)
    # what the graphs read: stowed constants are set on the root by both routes
    return (a.python_code("self").src + repr(sorted(ours.tensor_attrs.values())),
            b.python_code("self").src + repr(sorted(theirs.tensor_attrs.values())))


class _SetsAttributes(nn.Module):
    """A forward that sets tensor attributes while it runs, twice under one name."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.mask = torch.ones(4)
        y = self.lin(x) * self.mask
        self.mask = torch.full((4,), 2.0)
        return y + self.mask


def test_module_trace_equals_fx_trace_when_forward_sets_attributes() -> None:
    ours, theirs = _both_routes(_SetsAttributes())
    assert ours == theirs and "_tensor_constant1" in ours


def test_module_trace_equals_fx_trace_for_constants_and_wrapped_calls() -> None:
    ours, theirs = _both_routes(_Constants(), {"flag": False})
    assert ours == theirs
    assert "inner.offset" in ours and "_tensor_constant0" in ours and "sqrt" in ours
    ours, theirs = _both_routes(_Constants(), {"flag": True})
    assert ours == theirs and "_wrapped_scale" in ours


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "vit_b_16",
                                  "efficientnet_b0", "regnet_x_400mf"])
def test_module_trace_equals_fx_trace_on_torchvision(name: str) -> None:
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.get_model(name, weights=None)
    ours, theirs = _both_routes(model)
    assert ours == theirs


def test_module_trace_restores_what_it_patches_also_when_tracing_fails() -> None:
    from torch.fx._symbolic_trace import is_fx_tracing

    class Fails(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if x.sum() > 0 else -x  # data-dependent: a proxy has no bool

    call, getattr_ = nn.Module.__call__, nn.Module.__getattr__
    with pytest.raises(fx.proxy.TraceError):
        FxRazorTracer().trace(nn.Sequential(nn.ReLU(), Fails()))
    assert (nn.Module.__call__, nn.Module.__getattr__) == (call, getattr_)
    for cls in (Fails, nn.Sequential, nn.ReLU):  # the wrappers went from the classes too
        assert "__call__" not in vars(cls) and "__getattr__" not in vars(cls)
    assert not is_fx_tracing()


class _ReadsChildWeights(nn.Module):
    """A forward that reads a leaf layer's parameter and a buffer through the layer."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.norm = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.lin.weight * 2  # must stay tied to the parameter, not become a constant
        return self.norm(x @ w.t()) + self.norm.running_mean


class _OwnCall(nn.Linear):
    """A layer class with its own __call__ that calls nn.Module's through super()."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(*args, **kwargs) * 2


class _OwnGetattr(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def __getattr__(self, name: str) -> Any:
        return super().__getattr__(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + self.lin.bias


@pytest.mark.parametrize("model", [
    _ReadsChildWeights(),  # (the weight is a get_attr, then the mul)
    nn.Sequential(nn.ReLU(), _OwnCall(4, 4)),  # patched on nn.Module itself, as fx does
    nn.Sequential(_OwnGetattr(), nn.ReLU()),
], ids=["child-weights", "own-call", "own-getattr"])
def test_module_trace_equals_fx_trace_for_attribute_reads_and_own_special_methods(
        model: nn.Module) -> None:
    ours, theirs = _both_routes(model)
    assert ours == theirs
    assert "__call__" not in vars(nn.Sequential) and "__getattr__" not in vars(nn.Linear)
    # the classes' own special methods are still theirs
    assert "__call__" in vars(_OwnCall) and "__getattr__" in vars(_OwnGetattr)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).relu()


def test_convert_frees_its_traced_copy_without_waiting_for_a_collection() -> None:
    # The copy's containers (_Block) are only needed while tracing; a reference cycle
    # through the patched module wrappers used to keep them alive until a collection.
    import gc

    import fxrazor

    model = nn.Sequential(_Block(), _Block())
    was = gc.isenabled()
    gc.disable()
    try:
        supernet = fxrazor.convert(model, torch.randn(1, 3, 4, 4))
        blocks = [o for o in gc.get_objects() if type(o) is _Block]
        assert {id(b) for b in blocks} == {id(model[0]), id(model[1])}  # the user's alone
    finally:
        if was:
            gc.enable()
    assert len(supernet.units) >= 1


def test_remembered_node_base_names_are_fx_names() -> None:
    import functools

    from fxrazor.trace.tracer import _candidate_name

    graph = fx.Graph()
    targets = ["features.0.Conv", "__getitem__", "mulAdd", operator.add, torch.relu,
               F.conv2d, lambda t: t, math.sqrt]
    for target in targets * 2:  # the second time from the cache
        assert _candidate_name(graph, target) == graph._target_to_str(target)
    assert _candidate_name(graph, functools.partial(torch.add, alpha=2)) is None  # no name
