"""nn.MultiheadAttention decomposed into separate q/k/v projections (fxrazor.decompose), so
that heads and head dims prune: the decomposition computes what the layer computes."""

from __future__ import annotations

import pytest
import torch
from small_models import AttentionBlock
from torch import nn

import fxrazor
from fxrazor.decompose import DecomposedMultiheadAttention


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
    torch.manual_seed(0)
    model = AttentionBlock().eval()
    x = torch.randn(2, 5, 16)
    sn = fxrazor.convert(model, x, split_dims="outer")
    assert isinstance(model.attn, nn.MultiheadAttention)  # the user's model is untouched
    (heads,) = [u for u in sn.units if u.num_channels == 4]
    torch.testing.assert_close(sn(x), model(x), rtol=1e-5, atol=1e-6)
    sn.set_choices({heads.name: 2})
    frozen = fxrazor.freeze(sn)
    torch.testing.assert_close(frozen(x), sn(x))
    assert frozen.get_submodule("attn.q_proj").out_features == 8
