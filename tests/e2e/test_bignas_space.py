"""A BigNAS search space built on a converted supernet: per block a kernel-size value
mutable on the 7x7 depthwise conv and an expand-ratio value mutable on the hidden unit,
the other channel units (the residual chains across blocks, the head) searched freely.

Oracles: the supernet at the largest values equals the original model; at 200 random
subnets the frozen model equals the supernet, holds only torch layers, has the sizes the
values name (counted here from the choices) and fewer parameters than the largest one.
"""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import fxrazor
from fxrazor.errors import FxRazorError
from fxrazor.mutables.derived_mutable import DerivedMutable
from fxrazor.mutables.mutable_value import OneShotMutableValue
from fxrazor.value_binding import bind_unit, bind_value, unbind, value_mutables

RATIOS, KERNELS = [3, 4, 6], [3, 5, 7]


def _widths(sn: fxrazor.Supernet, mode: str = "random") -> dict:
    """Sampled widths of the free channel units only: the test sets the op and value
    mutables itself (``sn.sample_choices`` would draw those too)."""
    names = {u.name for u in sn.units}
    return {k: v for k, v in sn.sample_choices(mode).items() if k in names}


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, depthwise kxk, 1x1 project, residual where it fits."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 6, k: int = 7) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False),
                                    nn.BatchNorm2d(hidden), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(hidden, hidden, k, stride, k // 2, groups=hidden,
                                          bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False),
                                     nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


BLOCKS = [(8, 8, 1), (8, 12, 2), (12, 12, 1), (12, 12, 1)]  # (cin, cout, stride)


class BigNASNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU6())
        self.blocks = nn.Sequential(*[InvertedResidual(*b) for b in BLOCKS])
        self.head = nn.Sequential(nn.Conv2d(12, 32, 1), nn.BatchNorm2d(32), nn.ReLU6(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = BigNASNet()
    for m in model.modules():  # statistics that make every channel matter
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return model.eval()


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build(model: nn.Module, x: torch.Tensor):
    sn = fxrazor.convert(model, x)
    kernels = [OneShotMutableValue(KERNELS) for _ in BLOCKS]
    ratios = [OneShotMutableValue(RATIOS) for _ in BLOCKS]
    for i, (cin, _, _) in enumerate(BLOCKS):
        bind_value(sn, f"blocks.{i}.dw.0", "kernel_size", kernels[i])
        if i == 0:  # OFA style: the ratio times the block's *current* input width
            stem = sn.unit("stem.0")
            width = DerivedMutable(lambda r=ratios[0], u=stem: r.current_choice
                                   * u.activated_channels, source_mutables=[ratios[0]])
            bind_unit(sn, f"blocks.{i}.expand.0", width, attr="expand_ratio")
        else:  # the ratio times the block's largest input width
            bind_unit(sn, f"blocks.{i}.expand.0", ratios[i], attr="expand_ratio", scale=cin)
    return sn, kernels, ratios


@pytest.fixture
def one_thread():
    """Small tensors run faster on one thread, and far faster on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# the acceptance run draws 200 subnets (about 15 s); the default run a quick 20 of them
@pytest.mark.parametrize("draws", [20, pytest.param(200, marks=pytest.mark.slow)])
def test_bignas_search_space_end_to_end(draws: int, one_thread) -> None:
    model, x = _model(), torch.randn(1, 3, 16, 16)
    sn, kernels, ratios = _build(model, x)
    # the residual chains are units across blocks; the hidden units follow the ratios
    assert sorted(u.name for u in sn.units) == ["blocks.1.project.0", "head.0", "stem.0"]
    registry = value_mutables(sn)
    assert sorted(registry) == sorted(
        [f"blocks.{i}.dw.0.kernel_size" for i in range(4)]
        + [f"blocks.{i}.expand.0.expand_ratio" for i in range(4)])
    assert all(registry[f"blocks.{i}.dw.0.kernel_size"] is kernels[i] for i in range(4))
    assert registry["blocks.2.expand.0.expand_ratio"] is ratios[2]
    hidden = sn.unit("blocks.2.expand.0")
    assert not hidden.is_mutable and hidden.driven_by is ratios[2]

    # full width: the largest values and choices give the original model
    sn.set_choices(_widths(sn, "max"))
    with torch.no_grad():
        reference = model(x)
        torch.testing.assert_close(sn(x), reference, rtol=1e-5, atol=1e-6)
        largest = fxrazor.freeze(sn)
        torch.testing.assert_close(largest(x), reference, rtol=1e-5, atol=1e-6)
    max_params = _params(largest)
    assert max_params == _params(model)

    random.seed(0)
    smaller = 0
    for _ in range(draws):
        for m in kernels + ratios:
            m.current_choice = m.sample_choice()
        sn.set_choices(_widths(sn))
        with torch.no_grad():
            out = sn(x)
            frozen = fxrazor.freeze(sn)
            torch.testing.assert_close(frozen(x), out, rtol=1e-5, atol=1e-6)
        assert all(type(m).__module__.startswith("torch.") for m in frozen.modules())
        block_in = [sn.unit("stem.0").activated_channels] + [None] * 3
        for i, (cin, _, _) in enumerate(BLOCKS):  # sizes counted from the choices
            k, width = kernels[i].current_choice, ratios[i].current_choice * (block_in[i] or cin)
            dw = frozen.get_submodule(f"blocks.{i}.dw.0")
            assert dw.kernel_size == (k, k) and dw.padding == (k // 2, k // 2)
            assert dw.in_channels == dw.out_channels == dw.groups == width
            assert frozen.get_submodule(f"blocks.{i}.expand.0").out_channels == width
        at_max = all(m.current_choice == m.max_choice for m in kernels + ratios) and \
            sn.choices() == _widths(sn, "max")
        assert _params(frozen) < max_params or at_max
        smaller += not at_max
    assert smaller > 0.9 * draws


def test_frozen_depthwise_weight_is_the_centre_window() -> None:
    """One subnet, checked against the original weights indexed by hand."""
    model, x = _model(), torch.randn(1, 3, 16, 16)
    sn, kernels, ratios = _build(model, x)
    kernels[2].current_choice, ratios[2].current_choice = 3, 4
    frozen = fxrazor.freeze(sn)
    original = model.blocks[2].dw[0].weight
    assert torch.equal(frozen.get_submodule("blocks.2.dw.0").weight, original[:48, :, 2:5, 2:5])


def test_setting_a_driven_unit_directly_is_refused() -> None:
    model, x = _model(), torch.randn(1, 3, 16, 16)
    sn, _, ratios = _build(model, x)
    before = sn.choices()
    with pytest.raises(FxRazorError, match="follow value mutables"):
        sn.set_choices({"stem.0": 4, "blocks.2.expand.0": 5})
    assert sn.choices() == before  # nothing half-applied
    unbind(sn, "blocks.2.expand.0.expand_ratio")
    assert "blocks.2.expand.0" in [u.name for u in sn.units]
    sn.set_choices({"blocks.2.expand.0": 5})
    assert fxrazor.freeze(sn).get_submodule("blocks.2.expand.0").out_channels == 5
