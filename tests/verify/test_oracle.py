"""The zero-invariance oracle itself: it must see every unit member, decomposed layers too."""

from __future__ import annotations

import torch
from small_models import AttentionBlock
from torch import nn

import fxrazor
from fxrazor.verify.oracle import zero_pruned_channels


def test_oracle_zeroes_heads_of_a_decomposed_attention_layer() -> None:
    torch.manual_seed(0)
    model, x = AttentionBlock().eval(), torch.randn(2, 5, 16)
    sn = fxrazor.convert(model, x, split_dims="outer")
    (heads,) = [u for u in sn.units if u.num_channels == 4]
    sn.set_choices({heads.name: 2})
    frozen_out = fxrazor.freeze(sn)(x)
    zeroed = zero_pruned_channels(model, sn)
    assert isinstance(model.attn, nn.MultiheadAttention)          # the model is untouched
    torch.testing.assert_close(zeroed(x), frozen_out, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(model(x), frozen_out, atol=1e-3)   # the heads did matter


def test_oracle_detects_a_wrong_pruning() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 2, 1)).eval()
    x = torch.randn(1, 3, 4, 4)
    sn = fxrazor.convert(model, x)
    sn.set_choices({"0": 3})
    zeroed = zero_pruned_channels(model, sn)
    torch.testing.assert_close(zeroed(x), fxrazor.freeze(sn)(x))
    with torch.no_grad():
        zeroed[2].weight[:, 7] += 1.0  # a consumer that still reads a pruned channel...
        zeroed[0].bias[7] = 1.0        # ...which is no longer zero: outputs must differ
    assert not torch.allclose(zeroed(x), fxrazor.freeze(sn)(x), atol=1e-3)
