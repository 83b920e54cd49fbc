"""torch's transformer layers are traced through, so their projections prune; a
decomposed attention inside a block that stays whole still runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxrazor


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("train", [False, True])
def test_encoder_layer_prunes_heads_and_mlp(norm_first: bool, train: bool) -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True,
                                       norm_first=norm_first)
    model = nn.Sequential(nn.Linear(8, 16), layer, nn.Linear(16, 2)).train(train)
    x = torch.randn(2, 5, 8)
    sn = fxrazor.convert(model, x, split_dims="outer")
    assert {u.name: u.num_channels for u in sn.units} == {
        "0": 16, "1.self_attn.q_proj": 4, "1.linear1": 32}  # embedding, heads, MLP
    torch.testing.assert_close(sn(x), model(x), rtol=1e-5, atol=1e-6)
    sn.set_choices({"1.self_attn.q_proj": 2, "1.linear1": 8})
    frozen = fxrazor.freeze(sn)
    assert frozen.get_submodule("1.self_attn.q_proj").out_features == 8  # 2 heads of 4
    assert frozen.get_submodule("1.linear1").out_features == 8
    torch.testing.assert_close(frozen(x), sn(x), rtol=1e-5, atol=1e-6)
    assert torch.backends.mha.get_fastpath_enabled()  # restored after tracing


def test_decoder_layer_prunes_both_attentions() -> None:
    torch.manual_seed(0)
    model = nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, batch_first=True).eval()
    x = (torch.randn(2, 5, 16), torch.randn(2, 3, 16))
    sn = fxrazor.convert(model, x)
    names = {u.name for u in sn.units}
    assert {"self_attn.q_proj", "multihead_attn.q_proj", "linear1"} <= names
    torch.testing.assert_close(sn(*x), model(*x), rtol=1e-5, atol=1e-6)


def test_an_encoder_kept_whole_still_runs_in_eval() -> None:
    # nn.TransformerEncoder stays one call (its forward reads tensor properties); in eval
    # its layers check the fused path, which must turn away from the decomposed attention
    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True), 2,
        enable_nested_tensor=False)
    model = nn.Sequential(nn.Linear(8, 16), encoder, nn.Linear(16, 2)).eval()
    x = torch.randn(2, 5, 8)
    sn = fxrazor.convert(model, x)
    torch.testing.assert_close(sn(x), model(x), rtol=1e-5, atol=1e-6)
