"""Pruned Hugging Face models written by ``fxrazor.hf.save_pretrained`` and loaded back by
``AutoModelFor*.from_pretrained``: Llama (grouped-query attention: whole KV groups),
BERT and ViT (whole heads), each pruned the same in every layer.

The oracles: the loaded model computes the frozen subnet's outputs; its config holds the
sizes counted by hand from the tiny configs below; its weights are the original's kept
rows and columns (a default unit keeps its first channels); it has fewer parameters. A
subnet whose layers differ, or a model with no config, is refused with an error that
names the layers, and nothing is written.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import fxrazor
from fxrazor.errors import PretrainedExportError, UnsupportedModelError
from fxrazor.hf import layer_groups, save_pretrained, set_layer_widths, tie_layer_groups

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

V, HID, INTER, HEADS, KV, HEAD_DIM = 128, 64, 96, 4, 2, 16


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _full(sn) -> None:
    sn.set_choices({u.name: u.num_channels for u in sn.units})


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _llama(tied: bool):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=V, hidden_size=HID, intermediate_size=INTER, num_hidden_layers=2,
        num_attention_heads=HEADS, num_key_value_heads=KV, use_cache=False,
        tie_word_embeddings=tied)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, V, (1, 8))
    return model, ids, fxrazor.convert(model, {"input_ids": ids}, split_dims="outer")


@pytest.fixture(scope="module")
def llama():
    return _llama(tied=True)


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=V, hidden_size=HID, intermediate_size=INTER, num_hidden_layers=2,
        num_attention_heads=HEADS, max_position_embeddings=16, num_labels=3)
    model = transformers.BertForSequenceClassification(cfg).eval()
    ids = torch.randint(0, V, (1, 8))
    return model, ids, fxrazor.convert(model, {"input_ids": ids}, split_dims="outer")


def _vit():
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(
        image_size=16, patch_size=8, hidden_size=HID, intermediate_size=INTER,
        num_hidden_layers=2, num_attention_heads=HEADS, num_labels=3)
    model = transformers.ViTForImageClassification(cfg).eval()
    pixels = torch.randn(1, 3, 16, 16)
    return model, pixels, fxrazor.convert(model, {"pixel_values": pixels}, split_dims="outer")


@pytest.fixture(scope="module")
def vit():
    return _vit()


def test_llama_kv_groups_and_mlp_round_trip(llama, tmp_path) -> None:
    model, ids, sn = llama
    _full(sn)
    before = _state(model)
    # the hidden size spans the layers (RMSNorm written with tensor ops follows it)
    assert sorted(layer_groups(sn)) == ["attention", "hidden", "mlp"]
    set_layer_widths(sn, {"attention": 1, "mlp": 48})  # 1 of 2 KV groups, half the MLP
    choices = sn.choices()
    frozen = fxrazor.freeze(sn)
    save_pretrained(sn, tmp_path, model)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    # one KV group carries HEADS // KV = 2 query heads; the head size stays
    cfg = loaded.config
    assert (cfg.num_key_value_heads, cfg.num_attention_heads, cfg.head_dim,
            cfg.intermediate_size, cfg.hidden_size) == (1, 2, HEAD_DIM, 48, HID)
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, frozen(input_ids=ids)["logits"],
                              atol=1e-5)
    # the kept weights are the original's first rows: group 0 (query heads 0, 1; KV head 0)
    layer, orig = loaded.model.layers[1], model.model.layers[1]
    assert torch.equal(layer.self_attn.q_proj.weight, orig.self_attn.q_proj.weight[:32])
    assert torch.equal(layer.self_attn.k_proj.weight, orig.self_attn.k_proj.weight[:16])
    assert torch.equal(layer.self_attn.o_proj.weight, orig.self_attn.o_proj.weight[:, :32])
    assert torch.equal(layer.mlp.down_proj.weight, orig.mlp.down_proj.weight[:, :48])
    # the LM head is still the embedding (tie_word_embeddings)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    # per layer: q 32x64 + k, v 16x64 + o 64x32 + MLP 3 * 48x64 + 2 norms of 64; the
    # tied embedding and head once, and the final norm
    per_layer = 32 * 64 * 2 + 16 * 64 * 2 + 3 * 48 * 64 + 2 * 64
    assert _params(loaded) == V * HID + HID + 2 * per_layer < _params(model)
    # neither the model nor the supernet changed
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert sn.choices() == choices


def test_llama_hidden_size_round_trip(llama, tmp_path) -> None:
    model, ids, sn = llama
    _full(sn)
    set_layer_widths(sn, {"hidden": 48})
    frozen = fxrazor.freeze(sn)
    save_pretrained(sn, tmp_path, model)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    cfg = loaded.config
    # Llama's config names its head size, so it stays while the hidden size shrinks
    assert (cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads) == (48, HEAD_DIM, HEADS)
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, frozen(input_ids=ids)["logits"],
                              atol=1e-5)
    layer, orig = loaded.model.layers[0], model.model.layers[0]
    assert torch.equal(layer.input_layernorm.weight, orig.input_layernorm.weight[:48])
    assert torch.equal(layer.self_attn.q_proj.weight, orig.self_attn.q_proj.weight[:, :48])
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight[:, :48])


def test_bert_heads_with_hidden_and_intermediate_round_trip(bert, tmp_path) -> None:
    model, ids, sn = bert
    _full(sn)
    # BERT's head size is hidden_size / num_attention_heads: half the heads need half the
    # hidden size (the pooler's output is the hidden size too)
    set_layer_widths(sn, {"attention": 2, "mlp": 40, "hidden": 32, "bert.pooler.dense": 32})
    frozen = fxrazor.freeze(sn)
    save_pretrained(sn, tmp_path)  # the model's class and config, recorded by convert
    written = json.loads((tmp_path / "config.json").read_text())
    assert "head_dim" not in written  # BERT has none: 32 / 2 is the old head size, 16
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    cfg = loaded.config
    assert (cfg.num_attention_heads, cfg.hidden_size, cfg.intermediate_size) == (2, 32, 40)
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, frozen(input_ids=ids)["logits"],
                              atol=1e-5)
    assert _params(loaded) < _params(model)


def test_bert_heads_alone_cannot_be_written(bert, tmp_path) -> None:
    model, _, sn = bert
    _full(sn)
    set_layer_widths(sn, {"attention": 2})
    with pytest.raises(PretrainedExportError, match="ignores head_dim") as err:
        save_pretrained(sn, tmp_path / "out", model)
    assert "attention.self.query.weight: config gives [64, 64], subnet has [32, 64]" \
        in str(err.value)
    assert not (tmp_path / "out").exists()


def test_vit_heads_and_intermediate_round_trip(vit, tmp_path) -> None:
    model, pixels, sn = vit
    _full(sn)
    set_layer_widths(sn, {"attention": 3, "mlp": 40})
    frozen = fxrazor.freeze(sn)
    save_pretrained(sn, tmp_path, model)
    loaded = transformers.AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    cfg = loaded.config
    # 3 heads of the old size 16: the config says so, as hidden_size / 3 would not
    assert (cfg.num_attention_heads, cfg.head_dim, cfg.intermediate_size) == (3, 16, 40)
    with torch.no_grad():
        assert torch.allclose(loaded(pixel_values=pixels).logits,
                              frozen(pixel_values=pixels)["logits"], atol=1e-5)
    assert _params(loaded) < _params(model)


def test_layers_of_different_widths_are_named(llama, tmp_path) -> None:
    model, _, sn = llama
    _full(sn)
    sn.set_choices({"model.layers.0.mlp.gate_proj": 48, "model.layers.1.self_attn.q_proj": 1})
    with pytest.raises(PretrainedExportError) as err:
        save_pretrained(sn, tmp_path / "out", model)
    message = str(err.value)
    assert "intermediate_size differs across layers (48 at layers ['0'] of " \
        "model.layers.*.mlp.gate_proj; 96 at layers ['1'] of model.layers.*.mlp.gate_proj)" \
        in message
    assert "num_key_value_heads differs across layers (1 at layers ['1'] of " \
        "model.layers.*.self_attn.q_proj; 2 at layers ['0'] of " \
        "model.layers.*.self_attn.q_proj)" in message
    assert "tie_layer_groups" in message
    assert not (tmp_path / "out").exists()


def test_tied_layer_groups_give_one_choice_per_role(tmp_path) -> None:
    model, pixels, sn = _vit()
    tied = tie_layer_groups(sn, choices={"mlp": [48, 96]})
    assert sorted(tied) == ["attention", "mlp"] and len(tied["mlp"]) == 2
    assert sn.choices() == {"vit.embeddings.patch_embeddings.projection": HID,
                            "attention": HEADS, "mlp": 96}
    sn.set_choices({"attention": 2, "mlp": 48})
    assert [sn.unit(f"vit.layers.{i}.mlp.fc1").activated_channels for i in (0, 1)] == [48, 48]
    frozen = fxrazor.freeze(sn)
    save_pretrained(sn, tmp_path, model)
    loaded = transformers.AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert (loaded.config.num_attention_heads, loaded.config.intermediate_size) == (2, 48)
    with torch.no_grad():
        assert torch.allclose(loaded(pixel_values=pixels).logits,
                              frozen(pixel_values=pixels)["logits"], atol=1e-5)


def test_a_config_with_its_architecture_stands_for_the_model(vit, tmp_path) -> None:
    model, pixels, sn = vit
    _full(sn)
    set_layer_widths(sn, {"mlp": 64})
    cfg = copy.deepcopy(model.config)
    cfg.architectures = ["ViTForImageClassification"]
    save_pretrained(sn, tmp_path, cfg)
    loaded = transformers.AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(loaded(pixel_values=pixels).logits,
                              fxrazor.freeze(sn)(pixel_values=pixels)["logits"], atol=1e-5)


def test_no_config_or_another_layout_is_refused(vit, tmp_path) -> None:
    model, _, sn = vit
    _full(sn)
    with pytest.raises(UnsupportedModelError, match="original Hugging Face model"):
        save_pretrained(sn, tmp_path, nn.Linear(2, 2))
    bare = copy.deepcopy(model.config)
    bare.architectures = None
    with pytest.raises(UnsupportedModelError, match="no architectures"):
        save_pretrained(sn, tmp_path, bare)
    plain = fxrazor.convert(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)), torch.randn(1, 4))
    with pytest.raises(UnsupportedModelError, match="parameters are not ViTFor"):
        save_pretrained(plain, tmp_path, model)
    with pytest.raises(UnsupportedModelError, match="pass the original model"):
        save_pretrained(plain, tmp_path)  # nothing recorded: no config
    assert list(tmp_path.iterdir()) == []


def test_a_unit_that_is_no_config_size_is_refused(bert, tmp_path) -> None:
    model, _, sn = bert
    _full(sn)
    set_layer_widths(sn, {"bert.pooler.dense": 32})  # the pooler alone: not hidden_size
    with pytest.raises(PretrainedExportError) as err:
        save_pretrained(sn, tmp_path, model)
    assert "reading {'bert.pooler.dense': 'hidden_size'} as {'hidden_size': 32} gives other " \
        "shapes: ['bert.embeddings.word_embeddings.weight: config gives [128, 32], subnet " \
        "has [128, 64]'" in str(err.value)
