"""Freezing (passes/freeze.py): a plain GraphModule of the chosen subnet, equal to the supernet."""

from __future__ import annotations

import random

import models as M
import pytest
import torch
from torch import nn

import fxrazor
from fxrazor.errors import InvalidChoiceError
from fxrazor.ops import DynamicOp, DynamicParam, SizeCounter
from fxrazor.verify.equivalence import check_subnet
from fxrazor.verify.oracle import zero_pruned_channels


def test_layers_keep_their_own_mode_and_containers_take_the_models() -> None:
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Dropout(0.5)),
        nn.Conv2d(8, 4, 1),
    ).eval()
    model[0][2].train()  # e.g. Monte-Carlo dropout in an evaluated model
    sn = fxrazor.convert(model, torch.randn(1, 3, 6, 6))
    expected = {"": False, "0": False, "0.0": False, "0.1": False, "0.2": True, "1": False}
    assert {name: m.training for name, m in sn.graph_module.named_modules()} == expected
    frozen = fxrazor.freeze(sn)
    assert {name: m.training for name, m in frozen.named_modules()} == expected


def test_freeze_keeps_the_chosen_candidate_of_a_one_shot_op() -> None:
    from fxrazor.mutables import OneShotMutableOP

    class Searchable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 1)
            self.op = OneShotMutableOP({"k3": nn.Conv2d(8, 8, 3, padding=1),
                                        "k1": nn.Conv2d(8, 8, 1)})
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.op(self.stem(x)))

    torch.manual_seed(0)
    model, x = Searchable().eval(), torch.randn(1, 3, 6, 6)
    sn = fxrazor.convert(model, x)
    op = sn.graph_module.get_submodule("op")
    op.current_choice = "k1"
    frozen = fxrazor.freeze(sn)
    assert isinstance(frozen.get_submodule("op"), nn.Conv2d)
    assert frozen.get_submodule("op").kernel_size == (1, 1)
    torch.testing.assert_close(frozen(x), sn(x))
    torch.testing.assert_close(frozen(x), model.head(model.op.candidates["k1"](model.stem(x))))
    op.current_choice = None
    with pytest.raises(InvalidChoiceError, match="'op' has no current choice"):
        fxrazor.freeze(sn)


def _count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("build", M.ALL_BUILDERS, ids=lambda b: b.__name__)
def test_frozen_subnet_equals_supernet_and_holds_plain_torch(build) -> None:
    torch.manual_seed(0)
    model, x = build()
    model.eval()
    sn = fxrazor.convert(model, x)
    random.seed(0)
    choices = sn.sample_choices()
    if sn.units and choices == sn.sample_choices("max"):  # prune at least one unit
        choices[sn.units[0].name] = max(1, sn.units[0].num_channels // 2)
    sn.set_choices(choices)
    state = {k: v.clone() for k, v in sn.state_dict().items()}
    # frozen == supernet only: the zero oracle needs f(0) = 0 between producer and
    # consumer, which these models do not all have (a sigmoid, a token-mixing bias)
    check = check_subnet(model, sn, x, oracle=False)
    assert check.passed(), check
    frozen = check.frozen
    frozen.graph.lint()
    assert not any(isinstance(m, (DynamicOp, DynamicParam, SizeCounter, fxrazor.Supernet))
                   for m in frozen.modules())
    assert not any(type(m).__module__.startswith("fxrazor") for m in frozen.modules())
    if sn.units:
        assert _count_params(frozen) < _count_params(model)
    # freezing leaves the supernet alone
    assert sn.choices() == choices
    assert all(torch.equal(v, state[k]) for k, v in sn.state_dict().items())


def test_frozen_weights_are_contiguous_copies_of_the_kept_channels() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 2, 1)).eval()
    x = torch.randn(1, 3, 4, 4)
    sn = fxrazor.convert(model, x, unit="l1")
    sn.set_choices({"0": 3})
    kept = sn.units[0].current_mask.nonzero().flatten()
    frozen = fxrazor.freeze(sn)
    w0, w2 = frozen.get_submodule("0").weight, frozen.get_submodule("2").weight
    assert torch.equal(w0, model[0].weight[kept]) and torch.equal(w2, model[2].weight[:, kept])
    assert w0.is_contiguous() and w2.is_contiguous()
    supernet_ptrs = {p.data_ptr() for p in sn.parameters()}
    assert not {p.data_ptr() for p in frozen.parameters()} & supernet_ptrs
    with torch.no_grad():
        w0.add_(1.0)  # training the frozen model leaves the supernet and model alone
    assert torch.equal(sn.graph_module.get_submodule("0").weight, model[0].weight)


def test_frozen_sizes_and_parameters_are_constants_of_the_subnet() -> None:
    class Reshapes(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)
            self.scale = nn.Parameter(torch.rand(1, 8, 1, 1) + 0.5)
            self.fc = nn.Linear(8 * 16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x) * self.scale
            a, b = y.split([4, 4], 1)
            return self.fc(torch.cat([b, a], 1).view(-1, 8 * 16))

    torch.manual_seed(0)
    model, x = Reshapes().eval(), torch.randn(2, 3, 4, 4)
    sn = fxrazor.convert(model, x)
    sn.set_choices({u.name: max(1, u.num_channels // 2) for u in sn.units})
    frozen = fxrazor.freeze(sn)
    torch.testing.assert_close(frozen(x), sn(x))
    torch.testing.assert_close(frozen(x), zero_pruned_channels(model, sn)(x))
    kept = frozen.get_submodule("conv").out_channels
    assert kept < 8 and frozen.scale.shape == (1, kept, 1, 1)
    assert isinstance(frozen.scale, nn.Parameter)
    assert frozen.get_submodule("fc").in_features == kept * 16
    assert all(n.op != "call_module" or not n.target.startswith("fxr_")
               for n in frozen.graph.nodes)
    torch.jit.script(frozen)  # constant sizes: scripts without fxrazor
