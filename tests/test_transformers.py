"""Attention: whole-head and head-dim pruning of torchvision ViT and MaxViT, embedding-dim
pruning across the residual stream, and nn.MultiheadAttention decomposition."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import fxrazor
from fxrazor.decompose import DecomposedMultiheadAttention

torchvision = pytest.importorskip("torchvision")


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def vit() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None).eval()
    return model, torch.randn(1, 3, 224, 224)


@pytest.mark.slow
def test_vit_whole_head_pruning(vit) -> None:
    model, x = vit
    sn = fxrazor.convert(model, x, split_dims="outer")
    heads = [u for u in sn.units if u.name.endswith("self_attention.q_proj")]
    assert len(heads) == 12 and all(u.num_channels == 12 for u in heads)  # 12 layers x 12 heads
    # one unit ties each head's q, k and v rows and out_proj columns: 64 positions per head
    spec = next(s for s in sn.analysis.units if s.name == heads[0].name)
    members = {str(slot): pos.shape for slot, pos in spec.members}
    prefix = "encoder.layers.encoder_layer_0.self_attention"
    assert members == {f"{prefix}.{p}.out": (12, 64) for p in ("q_proj", "k_proj", "v_proj")} \
        | {f"{prefix}.out_proj.in": (12, 64)}
    sn.set_choices({u.name: 7 for u in heads})
    frozen = fxrazor.freeze(sn)
    torch.testing.assert_close(frozen(x), sn(x), rtol=1e-4, atol=1e-5)
    layer = frozen.get_submodule("encoder.layers.encoder_layer_0.self_attention")
    assert layer.q_proj.out_features == 7 * 64 and layer.out_proj.in_features == 7 * 64
    assert _params(frozen) < _params(model)


@pytest.mark.slow
def test_vit_head_dim_and_embedding_pruning(vit) -> None:
    model, x = vit
    sn = fxrazor.convert(model, x)
    with torch.no_grad():
        torch.testing.assert_close(sn(x), model(x), rtol=1e-4, atol=1e-5)
    stream = sn.unit("conv_proj")  # embedding dim: patch conv, class token, position embedding
    slots = {c["name"] for c in stream.output_related}
    assert {"class_token:dim2", "encoder.pos_embedding:dim2", "encoder.ln"} <= slots
    random.seed(0)
    sn.set_choices(sn.sample_choices())
    frozen = fxrazor.freeze(sn)
    torch.testing.assert_close(frozen(x), sn(x), rtol=1e-4, atol=1e-5)
    assert _params(frozen) < _params(model)
    torch.jit.script(frozen)


@pytest.mark.slow
def test_maxvit_heads_and_relative_position_tables() -> None:
    torch.manual_seed(0)
    model = torchvision.models.maxvit_t(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    sn = fxrazor.convert(model, x, split_dims="outer")
    table = "blocks.0.layers.0.layers.window_attention.attn_layer.1.relative_position_bias_table"
    assert any(c["name"] == f"{table}:dim1" for u in sn.units for c in u.output_related)
    random.seed(1)
    sn.set_choices(sn.sample_choices())
    frozen = fxrazor.freeze(sn)
    torch.testing.assert_close(frozen(x), sn(x), rtol=1e-4, atol=1e-5)
    assert _params(frozen) < _params(model)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_decomposed_attention_equals_multihead_attention(batch_first, need_weights) -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    dec = DecomposedMultiheadAttention.from_module(mha)
    x = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
    pad = torch.tensor([[False] * 4 + [True], [False] * 5])
    ref, ref_w = mha(x, x, x, key_padding_mask=pad, need_weights=need_weights)
    out, w = dec(x, x, x, key_padding_mask=pad, need_weights=need_weights)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    if need_weights:
        torch.testing.assert_close(w, ref_w, rtol=1e-5, atol=1e-6)
    back = dec.to_static()
    torch.testing.assert_close(back(x, x, x)[0], mha(x, x, x)[0], rtol=1e-5, atol=1e-6)


def test_model_with_multihead_attention_prunes_heads_and_stays_exact() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
            self.fc = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.attn(x, x, x, need_weights=False)[0])

    torch.manual_seed(0)
    model = Block().eval()
    x = torch.randn(2, 5, 16)
    sn = fxrazor.convert(model, x, split_dims="outer")
    assert isinstance(model.attn, nn.MultiheadAttention)  # the user's model is untouched
    (heads,) = [u for u in sn.units if u.num_channels == 4]
    torch.testing.assert_close(sn(x), model(x), rtol=1e-5, atol=1e-6)
    sn.set_choices({heads.name: 2})
    frozen = fxrazor.freeze(sn)
    torch.testing.assert_close(frozen(x), sn(x))
    assert frozen.get_submodule("attn.q_proj").out_features == 8
