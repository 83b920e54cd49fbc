"""Sizes and numbers a model computes from widths (``C // num_heads`` in attention) never
break a subnet: where the dim they size is pruned they follow its kept width, where it is
not (or they are used as values, like the softmax scale) they keep their traced value."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import fxrazor


class _Attention(nn.Module):
    """timm's attention written out: the head size is computed from the input's width."""

    def __init__(self, style: str, dim: int = 16, num_heads: int = 4) -> None:
        super().__init__()
        self.num_heads, self.style = num_heads, style
        self.inp = nn.Linear(8, dim)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0) if self.style == "unbind" else (qkv[0], qkv[1], qkv[2])
        attn = (q @ k.transpose(-2, -1) * (C // self.num_heads) ** -0.5).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.out(self.proj(y) + x)


VARIANTS = [("unbind", "largest"), ("unbind", "outer"), ("index", "largest"), ("index", "outer")]


def _supernet(style: str, split_dims: str) -> tuple[nn.Module, fxrazor.Supernet, torch.Tensor]:
    torch.manual_seed(0)
    model = _Attention(style).eval()
    x = torch.randn(2, 5, 8)
    return model, fxrazor.convert(model, x, split_dims=split_dims), x


@pytest.mark.parametrize(("style", "split_dims"), VARIANTS)
def test_every_choice_the_units_accept_runs(style: str, split_dims: str) -> None:
    """Every combination of widths, so no accepted choice can break the forward."""
    model, sn, x = _supernet(style, split_dims)
    with torch.no_grad():
        torch.testing.assert_close(sn(x), model(x))  # full width is the model
        widths = [range(1, u.num_channels + 1) for u in sn.units]
        for combo in itertools.product(*widths):
            sn.set_choices({u.name: w for u, w in zip(sn.units, combo, strict=True)})
            y = sn(x)
            assert y.shape == (2, 5, 8) and torch.isfinite(y).all()


def _random_subnets_equal_frozen(style: str, split_dims: str, count: int) -> None:
    _, sn, x = _supernet(style, split_dims)
    torch.manual_seed(1)
    with torch.no_grad():
        for _ in range(count):
            sn.set_choices(sn.sample_choices())
            torch.testing.assert_close(fxrazor.freeze(sn)(x), sn(x))


@pytest.mark.parametrize(("style", "split_dims"), VARIANTS)
def test_random_subnets_equal_their_frozen_models(style: str, split_dims: str) -> None:
    _random_subnets_equal_frozen(style, split_dims, 20)


@pytest.mark.slow
@pytest.mark.parametrize(("style", "split_dims"), VARIANTS)
def test_200_random_subnets_equal_their_frozen_models(style: str, split_dims: str) -> None:
    _random_subnets_equal_frozen(style, split_dims, 200)


def test_sizes_read_from_a_pruned_input_keep_their_traced_values() -> None:
    """The oracle written out: with ``inp`` cut to its first k outputs, the head size
    ``C // num_heads`` and the scale keep the full model's 4 and 4 ** -0.5 (the q/k/v
    projection's own unit, its head dim, stays at full width here), so the subnet is the
    full attention on the first k features of ``inp``, ``proj`` and the residual."""
    model, sn, x = _supernet("unbind", "largest")
    assert [u.name for u in sn.units] == ["inp", "qkv"]  # proj joins inp (the residual)
    with torch.no_grad():
        for k in (1, 3, 7, 16):
            sn.set_choices({"inp": k})
            x1 = x @ model.inp.weight[:k].T + model.inp.bias[:k]
            qkv = x1 @ model.qkv.weight[:, :k].T + model.qkv.bias
            q, kk, v = qkv.reshape(2, 5, 3, 4, 4).permute(2, 0, 3, 1, 4)
            attn = torch.softmax(q @ kk.transpose(-2, -1) * 4 ** -0.5, dim=-1)
            y = (attn @ v).transpose(1, 2).reshape(2, 5, 16)
            p = y @ model.proj.weight[:k].T + model.proj.bias[:k]
            want = (p + x1) @ model.out.weight[:, :k].T + model.out.bias
            torch.testing.assert_close(sn(x), want)
            torch.testing.assert_close(fxrazor.freeze(sn)(x), want)


def test_head_size_follows_a_pruned_head_dim() -> None:
    """Where q, k, v are taken by indexing the head dim is a unit of its own: the computed
    head size becomes its kept width (the oracle: the model with its head dim cut to the
    first d of each head, the scale kept at the traced 4 ** -0.5)."""
    model, sn, x = _supernet("index", "largest")
    assert {u.name: u.num_channels for u in sn.units} == {"inp": 16, "qkv": 4}
    with torch.no_grad():
        for d in (1, 2, 3):
            sn.set_choices({"qkv": d, "inp": 16})
            rows = torch.tensor([i * 4 + j for i in range(12) for j in range(d)])
            qkv = x @ model.inp.weight.T + model.inp.bias
            x1 = qkv
            qkv = qkv @ model.qkv.weight[rows].T + model.qkv.bias[rows]
            q, kk, v = qkv.reshape(2, 5, 3, 4, d).permute(2, 0, 3, 1, 4)
            attn = torch.softmax(q @ kk.transpose(-2, -1) * 4 ** -0.5, dim=-1)
            y = (attn @ v).transpose(1, 2).reshape(2, 5, 4 * d)
            cols = torch.tensor([h * 4 + j for h in range(4) for j in range(d)])
            p = y @ model.proj.weight[:, cols].T + model.proj.bias
            want = (p + x1) @ model.out.weight.T + model.out.bias
            torch.testing.assert_close(sn(x), want)
            torch.testing.assert_close(fxrazor.freeze(sn)(x), want)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["coat_lite_tiny", "vit_tiny_patch16_224"])
def test_timm_attention_subnets_run(name: str) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    sn = fxrazor.convert(model, x)
    with torch.no_grad():
        for _ in range(10):
            sn.set_choices(sn.sample_choices())
            torch.testing.assert_close(fxrazor.freeze(sn)(x), sn(x))
