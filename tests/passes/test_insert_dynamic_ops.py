"""Inserting dynamic ops (passes/insert_dynamic_ops.py): which layers become dynamic ops and
how, custom dynamic ops, parameters and size literals that follow the pruned widths."""

from __future__ import annotations

import models as M
import pytest
import torch
from small_models import (
    assert_same_state,
    conv_bn_chain,
    state_of,
)
from torch import nn

import fxrazor
from fxrazor.ops import DynamicOp, DynamicParam
from fxrazor.verify.equivalence import check_subnet
from fxrazor.verify.oracle import zero_pruned_channels


def test_custom_dynamic_op_built_fresh_takes_the_models_mode() -> None:
    from fxrazor.ops import DynamicConv2d

    class FreshConv(DynamicConv2d):
        @classmethod
        def from_static(cls, module: nn.Module) -> FreshConv:
            op = super().from_static(module)
            op.train(True)  # like a module built anew, in nn.Module's default mode
            return op

    model, x = conv_bn_chain()
    sn = fxrazor.convert(model.eval(), x, dynamic_ops={nn.Conv2d: FreshConv})
    assert any(isinstance(m, FreshConv) for m in sn.modules())
    assert not any(m.training for m in sn.modules())


def test_convert_makes_its_own_layer_copies_dynamic_and_convert__wraps_the_users() -> None:
    from fxrazor.ops import DynamicConv2d

    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x)
    assert type(sn.graph_module.get_submodule("0")) is DynamicConv2d
    assert type(model[0]) is nn.Conv2d  # the user's layer is untouched
    shared = fxrazor.convert_(model, x)
    dynamic = shared.graph_module.get_submodule("0")
    assert type(dynamic) is DynamicConv2d and type(model[0]) is nn.Conv2d
    assert dynamic.weight is model[0].weight  # a wrapper sharing the user's weights
    sn.set_choices({"0": 3})
    shared.set_choices({"0": 3})
    torch.testing.assert_close(sn(x), shared(x), rtol=0, atol=0)


class _SharesOnCopy(nn.Module):
    """A block whose copy shares its layer with the original (a frozen part, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def __deepcopy__(self, memo: dict) -> _SharesOnCopy:
        new = _SharesOnCopy.__new__(_SharesOnCopy)
        nn.Module.__init__(new)
        new.conv = self.conv  # the user's own layer, in the copy
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _InsideOpaque(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer(x)
        return y if y.sum() > -1e9 else -y  # data-dependent: stays an opaque leaf


class _LayerAlsoInOpaqueLeaf(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Conv2d(3, 8, 1)
        self.block = _InsideOpaque(self.shared)
        self.conv2 = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.shared(x).relu()) + self.block(x)


def test_convert_never_retypes_a_layer_the_user_or_an_opaque_leaf_holds() -> None:
    x = torch.randn(1, 3, 6, 6)
    model = nn.Sequential(_SharesOnCopy(), nn.ReLU(), nn.Conv2d(8, 4, 1))
    sn = fxrazor.convert(model, x)
    assert type(model[0].conv) is nn.Conv2d  # shared by the copy, still the user's layer
    sn.set_choices({sn.units[0].name: 4})
    torch.testing.assert_close(fxrazor.freeze(sn)(x), sn(x))

    model = _LayerAlsoInOpaqueLeaf()
    sn = fxrazor.convert(model, x)
    assert "block" in sn.analysis.opaque
    unit = next(u for u in sn.units if u.name == "shared")
    sn.set_choices({unit.name: 4})
    assert type(sn.graph_module.get_submodule("block.layer")) is nn.Conv2d
    torch.testing.assert_close(fxrazor.freeze(sn)(x), sn(x))


def test_a_dynamic_op_with_a_static_from_static_is_built_by_it() -> None:
    from fxrazor.ops import DynamicConv2d

    built = []

    class StaticBuilt(DynamicConv2d):
        @staticmethod
        def from_static(module: nn.Module) -> DynamicConv2d:
            built.append(module)
            return DynamicConv2d.from_static(module)

    assert StaticBuilt.adopt(nn.Conv2d(2, 2, 1)) is None
    model, x = conv_bn_chain()
    fxrazor.convert(model, x, dynamic_ops={nn.Conv2d: StaticBuilt})
    assert built


def test_hooks_on_the_graph_module_run_once_per_supernet_call() -> None:
    model, x = conv_bn_chain()
    sn = fxrazor.convert(model, x)
    calls = []
    sn.graph_module.register_forward_pre_hook(lambda module, args: calls.append(1))
    sn(x)  # the first call also generates the graph module's code
    sn(x)
    assert len(calls) == 2


@pytest.mark.parametrize("training", [False, True])
def test_supernet_starts_with_the_models_state(training: bool) -> None:
    model, x = conv_bn_chain()
    model.train(training)
    sn = fxrazor.convert(model, x)
    assert_same_state(state_of(model), sn.graph_module)


@pytest.mark.parametrize("dim", [-1, 2])
@pytest.mark.parametrize("split_dims", ["outer", "largest"])
def test_unflatten_sizes_follow_the_pruned_dim(dim: int, split_dims: str) -> None:
    class Unflat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x).unflatten(dim, (2, 4)).relu().flatten(-2))

    torch.manual_seed(0)
    model, x = Unflat().eval(), torch.randn(2, 5, 4)
    sn = fxrazor.convert(model, x, split_dims=split_dims)
    (unit,) = sn.units
    sn.set_choices({unit.name: 1})
    frozen = fxrazor.freeze(sn)
    torch.testing.assert_close(frozen(x), sn(x))
    torch.testing.assert_close(frozen(x), zero_pruned_channels(model, sn)(x))
    assert frozen.get_submodule("b").in_features < 8


def test_buffers_follow_channels_but_never_create_them() -> None:
    class Tables(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 1)
            self.register_buffer("embed", torch.randn(1, 6, 1, 1))   # added to the conv stream
            self.register_buffer("coords", torch.randn(5, 4))       # only a buffer makes these
            self.mlp = nn.Linear(4, 6)
            self.head = nn.Conv2d(6, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            bias = self.mlp(self.coords).mean(0)[None, :, None, None]
            return self.head(self.conv(x) + self.embed + bias)

    torch.manual_seed(0)
    model, x = Tables().eval(), torch.randn(1, 3, 4, 4)
    sn = fxrazor.convert(model, x)
    (unit,) = sn.units  # the stream: conv, mlp rows and the added buffer, 6 channels
    assert {c["name"] for c in unit.output_related} >= {"conv", "embed:dim1", "mlp"}
    coords = [g for g in sn.analysis.pinned if {str(s) for s in g.slots} == {"coords.dim1",
                                                                              "mlp.in"}]
    assert coords and coords[0].reasons == ("no layer produces these channels",)
    sn.set_choices({unit.name: 2})
    frozen = fxrazor.freeze(sn)
    torch.testing.assert_close(frozen(x), sn(x))
    torch.testing.assert_close(frozen(x), zero_pruned_channels(model, sn)(x))
    assert frozen.embed.shape == (1, 2, 1, 1) and frozen.coords.shape == (5, 4)


@pytest.mark.parametrize("build", M.ALL_BUILDERS, ids=lambda b: b.__name__)
def test_unit_members_become_dynamic_ops_and_other_layers_stay_static(build) -> None:
    model, x = build()
    sn = fxrazor.convert(model.eval(), x)
    members = {c["name"].partition(":")[0]: ":" in c["name"] for u in sn.all_units
               for c in [*u.output_related, *u.input_related]}
    for name, module in sn.graph_module.named_modules():
        if name in members and not members[name]:
            assert isinstance(module, DynamicOp), name
            static = dict(model.named_modules()).get(name)
            assert static is None or isinstance(module, type(static)), name  # still the layer
        elif isinstance(module, DynamicOp):
            assert name in members, f"{name} is dynamic but no unit holds it"
    params = {n for n, is_param in members.items() if is_param}
    dynamic_params = {m.target for m in sn.graph_module.modules() if isinstance(m, DynamicParam)}
    assert dynamic_params <= params


class _PrefixTokens(nn.Module):
    """Learned prefix tokens (prunable along the tokens) and a reshape whose sizes follow
    two units at once: ``reshape(B, T, C)``."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Parameter(torch.randn(1, 3, 8))
        self.fc, self.out = nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        h = self.fc(torch.cat([self.tok.expand(B, -1, -1), x], 1))
        T, C = h.shape[1], h.shape[2]
        return self.out(torch.relu(h).reshape(B, T, C)[:, 3:])


def test_two_sizes_of_one_call_get_a_counter_each() -> None:
    torch.manual_seed(0)
    model, x = _PrefixTokens().eval(), torch.randn(2, 5, 8)
    sn = fxrazor.convert(model, x)
    assert [(u.name, u.num_channels) for u in sn.units] == [("tok", 3), ("fc", 8)]
    sn.set_choices({"tok": 2, "fc": 5})
    result = check_subnet(model, sn, x)
    assert result.frozen_error == 0 and result.oracle_error < 1e-6, result
