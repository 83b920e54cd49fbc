"""Pruning decoder-only language models (examples/models): Llama-style with grouped-query
attention and rotary embeddings, and GPT-2-style with a fused q/k/v projection.

The expected units are written out from the architecture:

* one residual-stream unit (hidden size) spanning the embeddings, every norm, every
  projection's input or output on the stream and the LM head's input;
* one MLP-hidden unit per layer;
* attention, with ``split_dims="largest"`` (head-dim pruning, same dims in every head):
  a q/k unit whose channels are the rotary frequency pairs (dims i and i + head_dim/2 of
  every query and key head, plus the layer's ``inv_freq`` entry; GPT-2 has no rotary, so
  one q/k head dim per channel) and a v/o unit of head dims;
* attention, with ``split_dims="outer"`` (whole heads): one unit per layer whose channels
  are KV groups, each holding ``n_rep`` query heads, one key head and one value head.
"""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import fx, nn

import fxrazor

_MODELS = Path(__file__).resolve().parents[2] / "examples" / "models" / "__init__.py"


def _load_models():
    # by path, under a private name: tests/ has its own `models` module
    name = "fxrazor_example_models"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, _MODELS, submodule_search_locations=[str(_MODELS.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


models = _load_models()
L, V, HID, SEQ = 2, 128, 64, 16
H, KV, D, INTER = 4, 2, 16, 96  # Llama: 4 query heads over 2 KV heads of dim 16
N_REP = H // KV
LLAMA = models.LlamaConfig(vocab_size=V, hidden_size=HID, intermediate_size=INTER,
                           num_layers=L, num_heads=H, num_kv_heads=KV, max_seq_len=SEQ)
GPT = models.GPT2Config(vocab_size=V, hidden_size=HID, num_layers=L, num_heads=H,
                        max_seq_len=SEQ)
MODES = ("largest", "outer")


def _build(kind: str, **overrides):
    torch.manual_seed(0)
    if kind == "llama":
        cfg = models.LlamaConfig(**{**LLAMA.__dict__, **overrides})
        model = models.Llama(cfg)
    else:
        cfg = models.GPT2Config(**{**GPT.__dict__, **overrides})
        model = models.GPT2(cfg)
    return model.eval(), torch.randint(0, V, (2, SEQ))


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- expected unit layouts, by hand ----------------------------------------------------------
def _channels(unit) -> set[frozenset]:
    """Each channel of a unit as a frozenset of (member name, position)."""
    rows: list[set] = [set() for _ in range(unit.num_channels)]
    for entry in [*unit.output_related, *unit.input_related]:
        if "index" in entry:
            pos = np.asarray(entry["index"])
        else:
            pos = np.arange(entry["start"], entry["end"]).reshape(unit.num_channels, -1)
        for k in range(unit.num_channels):
            rows[k].update((entry["name"], int(p)) for p in pos[k])
    return {frozenset(r) for r in rows}


def _layout(spec: dict[str, list[list[int]]], n: int) -> set[frozenset]:
    return {frozenset((name, p) for name, per in spec.items() for p in per[k]) for k in range(n)}


def _hidden_unit(kind: str) -> set[frozenset]:
    if kind == "llama":
        stream = ["embed", "norm", "lm_head"]
        per_layer = ["attn_norm", "attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj",
                     "mlp_norm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
        prefix = "layers"
    else:
        stream = ["wte", "wpe", "ln_f", "lm_head"]
        per_layer = ["ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"]
        prefix = "blocks"
    names = stream + [f"{prefix}.{i}.{m}" for i in range(L) for m in per_layer]
    return _layout({n: [[c] for c in range(HID)] for n in names}, HID)


def _llama_attention(i: int, mode: str) -> list[set[frozenset]]:
    a = f"layers.{i}.attn."
    if mode == "outer":  # channel g: KV head g and query heads g*N_REP .. g*N_REP+N_REP-1
        group = {a + "q_proj": [list(range(g * N_REP * D, (g + 1) * N_REP * D)) for g in range(KV)],
                 a + "k_proj": [list(range(g * D, (g + 1) * D)) for g in range(KV)],
                 a + "v_proj": [list(range(g * D, (g + 1) * D)) for g in range(KV)],
                 a + "o_proj": [list(range(g * N_REP * D, (g + 1) * N_REP * D))
                                for g in range(KV)]}
        return [_layout(group, KV)]
    half = D // 2  # channel c: rotary pair (c, c + half) of every q and k head, inv_freq[c]
    qk = {a + "q_proj": [[h * D + c + s for h in range(H) for s in (0, half)] for c in range(half)],
          a + "k_proj": [[h * D + c + s for h in range(KV) for s in (0, half)]
                         for c in range(half)],
          a + "inv_freq:dim0": [[c] for c in range(half)]}
    vo = {a + "v_proj": [[h * D + c for h in range(KV)] for c in range(D)],
          a + "o_proj": [[h * D + c for h in range(H)] for c in range(D)]}
    return [_layout(qk, half), _layout(vo, D)]


def _gpt_attention(i: int, mode: str) -> list[set[frozenset]]:
    a = f"blocks.{i}.attn."
    if mode == "outer":  # channel h: head h of q, k and v in the fused projection
        head = {a + "c_attn": [[part * HID + h * D + c for part in range(3) for c in range(D)]
                               for h in range(H)],
                a + "c_proj": [list(range(h * D, (h + 1) * D)) for h in range(H)]}
        return [_layout(head, H)]
    qk = {a + "c_attn": [[part * HID + h * D + c for part in (0, 1) for h in range(H)]
                         for c in range(D)]}
    vo = {a + "c_attn": [[2 * HID + h * D + c for h in range(H)] for c in range(D)],
          a + "c_proj": [[h * D + c for h in range(H)] for c in range(D)]}
    return [_layout(qk, D), _layout(vo, D)]


def _expected_units(kind: str, mode: str) -> list[set[frozenset]]:
    expected = [_hidden_unit(kind)]
    for i in range(L):
        if kind == "llama":
            expected += _llama_attention(i, mode)
            mlp = {f"layers.{i}.mlp.{p}": [[c] for c in range(INTER)]
                   for p in ("gate_proj", "up_proj", "down_proj")}
            expected.append(_layout(mlp, INTER))
        else:
            expected += _gpt_attention(i, mode)
            mlp = {f"blocks.{i}.mlp.{p}": [[c] for c in range(4 * HID)] for p in ("c_fc", "c_proj")}
            expected.append(_layout(mlp, 4 * HID))
    return expected


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_units_match_the_architecture(kind, mode):
    model, ids = _build(kind)
    sn = fxrazor.convert(model, ids, split_dims=mode)
    found = [_channels(u) for u in sn.units]
    expected = _expected_units(kind, mode)
    assert len(found) == len(expected)
    for layout in expected:
        assert layout in found
    # nothing but the vocabulary (the logits) and, for whole-head pruning, the rotary
    # frequencies (whose dim is not pruned then) is left pinned
    pinned = {str(s) for g in sn.analysis.pinned for s in g.slots}
    allowed = {"lm_head.out"} | ({f"layers.{i}.attn.inv_freq.dim0" for i in range(L)}
                                 if kind == "llama" and mode == "outer" else set())
    assert pinned == allowed


# ---- numbers: supernet vs original, frozen vs supernet ----------------------------------------
CASES = [("llama", {}), ("llama", {"tie_embeddings": True}), ("gpt2", {}),
         ("gpt2", {"attention": "matmul"})]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("kind", "overrides"), CASES)
def test_random_subnet_freezes_to_the_same_logits(kind, overrides, mode):
    model, ids = _build(kind, **overrides)
    sn = fxrazor.convert(model, ids, split_dims=mode)
    with torch.no_grad():
        torch.testing.assert_close(sn(ids), model(ids))  # full width is the original
        for seed in range(3):
            random.seed(seed)
            sn.set_choices(sn.sample_choices())
            frozen = fxrazor.freeze(sn)
            torch.testing.assert_close(frozen(ids), sn(ids), rtol=1e-5, atol=1e-5)
            assert count_params(frozen) < count_params(model)


def _half(sn) -> None:
    sn.set_choices({u.name: u.num_channels // 2 for u in sn.units})


def _weight_shapes(frozen: fx.GraphModule, prefix: str, names: list[str]) -> dict:
    return {n: tuple(frozen.get_submodule(prefix + n).weight.shape) for n in names}


@pytest.mark.parametrize("mode", MODES)
def test_llama_half_width_shapes(mode):
    model, ids = _build("llama")
    sn = fxrazor.convert(model, ids, split_dims=mode)
    _half(sn)
    frozen = fxrazor.freeze(sn)
    h = HID // 2
    if mode == "largest":  # every head keeps half its dims; all heads stay
        q, kv, o_in = H * D // 2, KV * D // 2, H * D // 2
    else:  # half the KV groups, each with its N_REP query heads
        q, kv, o_in = (KV // 2) * N_REP * D, (KV // 2) * D, (KV // 2) * N_REP * D
    names = ["attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.gate_proj",
             "mlp.up_proj", "mlp.down_proj", "attn_norm", "mlp_norm"]
    assert _weight_shapes(frozen, "layers.0.", names) == {
        "attn.q_proj": (q, h), "attn.k_proj": (kv, h), "attn.v_proj": (kv, h),
        "attn.o_proj": (h, o_in), "mlp.gate_proj": (INTER // 2, h),
        "mlp.up_proj": (INTER // 2, h), "mlp.down_proj": (h, INTER // 2),
        "attn_norm": (h,), "mlp_norm": (h,)}
    assert tuple(frozen.get_submodule("embed").weight.shape) == (V, h)
    assert tuple(frozen.get_submodule("lm_head").weight.shape) == (V, h)
    torch.testing.assert_close(frozen(ids), sn(ids), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kept_groups", [1, 2])
def test_gqa_whole_group_pruning_keeps_the_head_ratio(kept_groups):
    model, ids = _build("llama")
    sn = fxrazor.convert(model, ids, split_dims="outer")
    sn.set_choices({"layers.0.attn.q_proj": kept_groups})
    frozen = fxrazor.freeze(sn)
    attn = "layers.0.attn."
    q_out = frozen.get_submodule(attn + "q_proj").out_features
    k_out = frozen.get_submodule(attn + "k_proj").out_features
    v_out = frozen.get_submodule(attn + "v_proj").out_features
    kept_q_heads, kept_kv_heads = q_out // D, k_out // D
    assert (q_out, k_out, v_out) == (kept_groups * N_REP * D, kept_groups * D, kept_groups * D)
    assert kept_q_heads == N_REP * kept_kv_heads
    assert frozen.get_submodule(attn + "o_proj").in_features == q_out
    torch.testing.assert_close(frozen(ids), sn(ids), rtol=1e-5, atol=1e-5)


def test_head_dim_pruning_keeps_rotary_pairs():
    """Keeping the first k frequency pairs keeps dims [0, k) and [D/2, D/2 + k) of every
    q/k head: the same as a model built with those dims (checked on the weights)."""
    model, ids = _build("llama")
    sn = fxrazor.convert(model, ids, split_dims="largest")
    sn.set_choices({"layers.0.attn.q_proj": 3})
    frozen = fxrazor.freeze(sn)
    kept = [c + s for s in (0, D // 2) for c in range(3)]
    rows = torch.tensor([h * D + c for h in range(H) for c in kept])
    full = model.get_submodule("layers.0.attn.q_proj").weight
    torch.testing.assert_close(frozen.get_submodule("layers.0.attn.q_proj").weight,
                               full[rows.sort().values])
    # the sliced buffer's name is freeze's business: find it by its source's name
    inv = [v for k, v in frozen.named_buffers() if k.endswith("layers_0_attn_inv_freq")
           or k == "layers.0.attn.inv_freq"]
    assert len(inv) == 1
    torch.testing.assert_close(inv[0], model.layers[0].attn.inv_freq[:3])
    torch.testing.assert_close(frozen(ids), sn(ids), rtol=1e-5, atol=1e-5)


# ---- the frozen model leaves fxrazor behind -----------------------------------------------------
def _drop_placeholder_types(gm: fx.GraphModule) -> fx.GraphModule:
    # torch.fx writes a `from __future__ import annotations` forward's `torch.Tensor` as a
    # global TorchScript cannot resolve (`_torch_Tensor_`); plain fx.symbolic_trace output
    # of the same model fails to script the same way, so this is not about fxrazor
    for node in gm.graph.find_nodes(op="placeholder"):
        node.type = None
    gm.recompile()
    return gm


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_frozen_model_exports_and_scripts(kind, mode):
    model, ids = _build(kind)
    sn = fxrazor.convert(model, ids, split_dims=mode)
    _half(sn)
    frozen = fxrazor.freeze(sn)
    expected = frozen(ids)
    exported = torch.export.export(frozen, (ids,))
    torch.testing.assert_close(exported.module()(ids), expected)
    with warnings.catch_warnings():  # torch.jit.script is deprecated but still works
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(_drop_placeholder_types(frozen))
    torch.testing.assert_close(scripted(ids), expected)


def test_meta_and_cpu_models_give_the_same_units():
    cfg = models.LlamaConfig(vocab_size=V, hidden_size=HID, intermediate_size=INTER,
                             num_layers=L, num_heads=H, num_kv_heads=KV, max_seq_len=SEQ)
    with torch.device("meta"):
        meta = models.Llama(cfg)
    ids = torch.zeros(1, SEQ, dtype=torch.long)
    for mode in MODES:
        on_meta = fxrazor.convert(meta, ids, split_dims=mode)
        on_cpu = fxrazor.convert(models.Llama(cfg), ids, split_dims=mode)
        assert [(u.name, u.num_channels) for u in on_meta.units] == \
               [(u.name, u.num_channels) for u in on_cpu.units]
        assert [_channels(u) for u in on_meta.units] == [_channels(u) for u in on_cpu.units]


# ---- limitations ----------------------------------------------------------------------------------
def test_freeze_keeps_tied_embeddings_tied():
    model, ids = _build("gpt2")
    assert model.lm_head.weight is model.wte.weight
    sn = fxrazor.convert(model, ids)
    _half(sn)
    frozen = fxrazor.freeze(sn)
    assert frozen.get_submodule("lm_head").weight is frozen.get_submodule("wte").weight


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        models.LlamaConfig(num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="even head_dim"):
        models.LlamaConfig(hidden_size=12, num_heads=4, num_kv_heads=4)
    with pytest.raises(ValueError, match="'sdpa' or 'matmul'"):
        models.GPT2Config(attention="flash")
    sn = fxrazor.convert(*_build("llama"))
    with pytest.raises(fxrazor.FxRazorError, match="layers.0.attn.q_proj|99"):
        sn.set_choices({"layers.0.attn.q_proj": 99})  # the unit has 8 channels


def test_prune_llm_example_runs():
    script = _MODELS.parents[1] / "prune_llm.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: frozen logits match the supernet" in result.stdout
    # 8 query heads over 4 KV heads, halved as whole KV groups; MLP 344 → 172
    assert "query heads (layer 0)           8         4" in result.stdout
    assert "KV heads (layer 0)              4         2" in result.stdout
    assert "MLP width (layer 0)           344       172" in result.stdout
