"""Hugging Face transformers by family, through the export front-end (tiny random configs).

Every architecture of ``fxrazor.verify.hf_zoo`` must convert with at least one unit, equal
the original at full width, freeze at half width to a smaller model equal to the supernet
(also at another batch size and length), and export with torch.export.
"""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from fxrazor.verify.equivalence import within  # noqa: E402
from fxrazor.verify.hf_zoo import check_hf_model, hf_specs  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")]


@pytest.mark.parametrize("spec", hf_specs(), ids=lambda s: s.name)
def test_family_converts_prunes_and_freezes(spec) -> None:
    result = check_hf_model(spec)
    assert result.units >= 1, result.reasons
    assert within(result.full_width_error, result.output_scale), result
    assert within(result.frozen_error, result.output_scale), result
    assert within(result.other_size_error, result.output_scale), result
    assert result.params_after < result.params_before
    assert result.exported


def test_decoder_prunes_hidden_heads_and_mlp() -> None:
    """Llama: the hidden size (through the hand-written RMSNorms), KV groups with their
    query heads, and each MLP width are units, named by module path."""
    import fxrazor

    spec = next(s for s in hf_specs() if s.name == "llama")
    model = spec.build().eval()
    sn = fxrazor.convert(model, spec.example(), split_dims="outer")
    widths = {u.name: u.num_channels for u in sn.units}
    assert widths == {"model.embed_tokens": 64, "model.layers.0.self_attn.q_proj": 2,
                      "model.layers.0.mlp.gate_proj": 96, "model.layers.1.self_attn.q_proj": 2,
                      "model.layers.1.mlp.gate_proj": 96}
    sn.set_choices({"model.embed_tokens": 48, "model.layers.0.self_attn.q_proj": 1,
                    "model.layers.1.mlp.gate_proj": 40})
    frozen = fxrazor.freeze(sn)
    layer0 = frozen.get_submodule("model.layers.0.self_attn")
    assert (layer0.q_proj.weight.shape, layer0.k_proj.weight.shape) == ((32, 48), (16, 48))
    assert frozen.get_submodule("model.layers.1.mlp.up_proj").out_features == 40


def test_7b_llama_on_meta_converts_as_a_plan() -> None:
    """A 7B-shaped Llama built on the meta device (no memory for weights) converts through
    the export front-end: every layer's KV groups and MLP width and the hidden size."""
    import torch
    import transformers

    import fxrazor

    config = transformers.LlamaConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, use_cache=False)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config).eval()
    ids = torch.zeros(1, 16, dtype=torch.long, device="meta")
    sn = fxrazor.convert(model, {"input_ids": ids}, split_dims="outer")
    widths = {u.name: u.num_channels for u in sn.units}
    assert len(widths) == 65 and widths["model.embed_tokens"] == 4096
    assert widths["model.layers.31.mlp.gate_proj"] == 11008
    assert widths["model.layers.31.self_attn.q_proj"] == 32  # whole heads
