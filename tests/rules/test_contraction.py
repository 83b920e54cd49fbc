"""Contraction rules: functional linear, matmul, einsum, functional layer norm, attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from small_models import FunctionalLinear
from torch import nn
from unit_checks import analyse, expect, membership, reasons_of

import fxrazor
from fxrazor.verify.equivalence import check_subnet


def test_functional_linear_hidden_layer_is_prunable() -> None:
    torch.manual_seed(0)
    model = FunctionalLinear().eval()
    x = torch.randn(2, 4)
    sn = fxrazor.convert(model, x)
    assert [u.num_channels for u in sn.units] == [8]
    sn.set_choices({sn.units[0].name: 5})
    assert fxrazor.freeze(sn).get_submodule("out").in_features == 5


class _Attention(nn.Module):
    """q, k, v projections (8 wide) of 6-wide tokens, a contraction, an output projection."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.q, self.k, self.v = nn.Linear(6, 8), nn.Linear(6, 8), nn.Linear(6, 4)
        self.o = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.how == "sdpa":
            return self.o(F.scaled_dot_product_attention(q, k, v))
        if self.how == "einsum":
            scores = torch.einsum("btc,bsc->bts", q, k)
        elif self.how == "matmul_method":
            scores = q.matmul(k.transpose(1, 2))
        else:
            scores = q @ k.transpose(1, 2)
        return self.o(scores.softmax(-1) @ v)


@pytest.mark.parametrize("how", ["matmul", "matmul_method", "einsum", "sdpa"])
def test_contraction_joins_the_contracted_dims_and_passes_the_rest(how: str) -> None:
    torch.manual_seed(0)
    a = analyse(lambda: (_Attention(how).eval(), torch.randn(2, 5, 6)))
    # q and k lose the same positions; v's channels reach o's input
    assert membership(a) == expect((8, {"q.out": 1, "k.out": 1}), (4, {"v.out": 1, "o.in": 1}))
    model, x = _Attention(how).eval(), torch.randn(2, 5, 6)
    sn = fxrazor.convert(model, x)
    sn.set_choices({u.name: 3 for u in sn.units})
    check = check_subnet(model, sn, x, oracle=False)  # softmax(0) is not 0: no zero oracle
    assert check.passed(rtol=1e-5), check
    assert check.frozen.get_submodule("q").out_features == 3
    assert check.frozen.get_submodule("o").in_features == 3


def test_contraction_with_an_inert_dim_pins_the_other_side() -> None:
    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(6, 8), nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.a(x)
            return self.b(y @ torch.ones((y.shape[-1], 3)))  # a new tensor: no layer's channels

    a = analyse(lambda: (Fixed().eval(), torch.randn(4, 6)))
    assert membership(a) == expect()
    assert any("contracts it with an inert dim" in r for r in reasons_of(a, "a.out"))


@pytest.mark.parametrize("fn", ["functional", "torch"])
def test_functional_layer_norm_weights_follow_the_normalised_channels(fn: str) -> None:
    class Norm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)
            self.w, self.bias = nn.Parameter(torch.rand(8) + 0.5), nn.Parameter(torch.randn(8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            norm = F.layer_norm if fn == "functional" else torch.layer_norm
            return self.b(norm(self.a(x), (8,), self.w, self.bias, 1e-5))

    torch.manual_seed(0)
    model, x = Norm().eval(), torch.randn(3, 4)
    a = analyse(lambda: (model, x))
    assert membership(a) == expect((8, {"a.out": 1, "w.dim0": 1, "bias.dim0": 1, "b.in": 1}))
    sn = fxrazor.convert(model, x)
    sn.set_choices({"a": 5})
    check = check_subnet(model, sn, x, oracle=False)  # statistics follow the kept channels
    assert check.passed(rtol=1e-5), check
    assert check.frozen.w.shape == (5,) and check.frozen.get_submodule("b").in_features == 5


class _FusedAttention(nn.Module):
    """timm's attention: q, k, v from one projection by ``unbind``, default SDPA scale."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(16, 48), nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, 2, C // 2).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C))


def test_pruned_head_dim_keeps_the_default_attention_scale() -> None:
    """The head dim is a unit (through ``unbind``); SDPA's default scale reads the head
    dim's width, so it is fixed to the full model's 8 ** -0.5: the subnet is the model
    with those dims zeroed (the zero oracle holds) and the frozen code says so."""
    torch.manual_seed(0)
    model, x = _FusedAttention().eval(), torch.randn(2, 5, 16)
    sn = fxrazor.convert(model, x)
    assert [(u.name, u.num_channels) for u in sn.units] == [("qkv", 8)]
    sn.set_choices({"qkv": 3})
    result = check_subnet(model, sn, x)
    assert result.frozen_error < 1e-6 and result.oracle_error < 1e-6, result
    assert "scale = 0.353553390593273" in fxrazor.freeze(sn).code  # 8 ** -0.5
