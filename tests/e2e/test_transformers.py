"""Attention end to end: whole-head and head-dim pruning of torchvision ViT, MaxViT and
Swin, and embedding-dim pruning across the residual stream. The decompositions they rely
on are tested in ``tests/trace/test_decompose_*.py``."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import fxrazor

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


# ---- Swin: shifted-window attention decomposed into prunable heads -------------------------


def _tensor_shape(module: nn.Module, path: str) -> tuple[int, ...]:
    """Shape of a parameter of ``path``, wherever freezing moved it."""
    tensors = dict(module.named_parameters()) | dict(module.named_buffers())
    (name,) = [n for n in tensors if n.replace(".", "_").endswith(path.replace(".", "_"))]
    return tuple(tensors[name].shape)


def _zero_heads(model: nn.Module, block: str, keep: torch.Tensor) -> None:
    """Zero the value rows of the heads not kept in the torchvision block: their outputs
    vanish, which is what removing them must give."""
    attn = model.get_submodule(block)
    dim, heads = attn.proj.in_features, attn.num_heads
    rows = torch.arange(dim).view(heads, -1)[~keep].flatten() + 2 * dim
    with torch.no_grad():
        attn.qkv.weight[rows] = 0.0
        attn.qkv.bias[rows] = 0.0


def _check_swin_heads(name: str, per_head: dict[str, int]) -> tuple[nn.Module, nn.Module]:
    """Convert with whole heads, check the head unit of the first block and prune one head
    of every block; returns the frozen model and the first block's torchvision attention."""
    import copy

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(1, 3, 112, 112)  # stage 1 shifts and masks, stage 4 pads 4x4 to 7x7
    sn = fxrazor.convert(model, x, split_dims="outer")
    block = "features.1.0.attn"
    ref_attn = model.get_submodule(block)
    heads, head_dim = ref_attn.num_heads, ref_attn.proj.in_features // ref_attn.num_heads
    spec = next(s for s in sn.analysis.units if s.name == f"{block}.q_proj")
    members = {str(slot): pos.shape for slot, pos in spec.members}
    expected = {f"{block}.{p}": (heads, head_dim)
                for p in ("q_proj.out", "k_proj.out", "v_proj.out", "proj.in")}
    expected |= {f"{block}.{p}": (heads, r) for p, r in per_head.items()}
    assert members == expected
    head_units = [u for u in sn.units if u.name.endswith("attn.q_proj")]
    assert len(head_units) == sum(len(s) for s in model.features[1::2])
    with torch.no_grad():
        torch.testing.assert_close(sn(x), model(x), rtol=1e-4, atol=1e-5)
    sn.set_choices({u.name: u.num_channels - 1 for u in head_units})
    frozen = fxrazor.freeze(sn)
    zeroed = copy.deepcopy(model)
    for u in head_units:
        _zero_heads(zeroed, u.name.rpartition(".")[0], u.current_mask)
    with torch.no_grad():
        out = frozen(x)
        torch.testing.assert_close(out, sn(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out, zeroed(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.jit.script(frozen)(x), out, rtol=1e-4, atol=1e-5)
    assert _params(frozen) < _params(model)
    kept = (heads - 1) * head_dim
    assert frozen.get_submodule(f"{block}.q_proj").out_features == kept
    assert frozen.get_submodule(f"{block}.v_proj").out_features == kept
    assert frozen.get_submodule(f"{block}.proj").in_features == kept
    return frozen, ref_attn


@pytest.mark.slow
def test_swin_t_whole_head_pruning() -> None:
    frozen, ref = _check_swin_heads("swin_t", {"relative_position_bias_table.dim1": 1})
    offsets = ref.relative_position_bias_table.shape[0]
    assert _tensor_shape(frozen, "features.1.0.attn.relative_position_bias_table") \
        == (offsets, ref.num_heads - 1)


@pytest.mark.slow
def test_swin_v2_t_whole_head_pruning() -> None:
    frozen, ref = _check_swin_heads("swin_v2_t", {"logit_scale.dim0": 1, "cpb_mlp.2.out": 1})
    block = "features.1.0.attn"
    assert _tensor_shape(frozen, f"{block}.logit_scale") == (ref.num_heads - 1, 1, 1)
    assert frozen.get_submodule(f"{block}.cpb_mlp.2").out_features == ref.num_heads - 1


@pytest.mark.slow
def test_swin_t_head_dim_pruning() -> None:
    torch.manual_seed(0)
    model = torchvision.models.swin_t(weights=None).eval()
    x = torch.randn(1, 3, 112, 112)
    sn = fxrazor.convert(model, x)
    block = "features.1.0.attn"
    head_dim = model.get_submodule(block).proj.in_features // model.get_submodule(block).num_heads
    # q/k rows are joined across heads, v rows with the projection's columns
    assert sn.unit(f"{block}.q_proj").num_channels == head_dim
    assert sn.unit(f"{block}.v_proj").num_channels == head_dim
    random.seed(0)
    sn.set_choices(sn.sample_choices())
    frozen = fxrazor.freeze(sn)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), sn(x), rtol=1e-4, atol=1e-5)
    assert _params(frozen) < _params(model)


# ---- Swin: patch merging decomposed, so each stage's stream is one unit -------------------


def _check_swin_stream(name: str) -> None:
    """The first stage's embedding dim is one unit from the patch embedding to the merge's
    reduction (its columns: C channels x 4 pixels); random subnets freeze exactly."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(1, 3, 112, 112)
    sn = fxrazor.convert(model, x)
    dim = model.features[0][0].out_channels
    spec = next(s for s in sn.analysis.units if s.name == "features.0.0")
    members = {str(slot): pos for slot, pos in spec.members}
    assert spec.num_channels == dim
    for slot in ("features.0.0.out", "features.1.0.attn.q_proj.in", "features.1.0.attn.proj.out",
                 "features.1.1.mlp.3.out"):
        assert members[slot].shape == (dim, 1)
    # torchvision concatenates the four pixels of a patch: column p·C + c is channel c
    columns = torch.arange(dim)[:, None] + dim * torch.arange(4)
    assert members["features.2.reduction.in"].tolist() == columns.tolist()
    assert not any("features.2" in str(s) for g in sn.analysis.pinned for s in g.slots)
    with torch.no_grad():
        torch.testing.assert_close(sn(x), model(x), rtol=1e-4, atol=1e-5)
    random.seed(0)
    sn.set_choices(sn.sample_choices())
    frozen = fxrazor.freeze(sn)
    keep = sn.unit("features.0.0").current_mask
    assert 0 < int(keep.sum()) < dim
    with torch.no_grad():
        out = frozen(x)
        torch.testing.assert_close(out, sn(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.jit.script(frozen)(x), out, rtol=1e-4, atol=1e-5)
        # the frozen merge keeps exactly the kept channels of each of the four pixels
        rows = sn.unit("features.2.reduction").current_mask
        weight = model.features[2].reduction.weight.view(-1, 4, dim)[rows][:, :, keep]
        torch.testing.assert_close(frozen.get_submodule("features.2.reduction").weight,
                                   weight.flatten(1))
    assert _params(frozen) < _params(model)


@pytest.mark.slow
def test_swin_t_stream_prunes_across_patch_merging() -> None:
    _check_swin_stream("swin_t")


@pytest.mark.slow
def test_swin_v2_t_stream_prunes_across_patch_merging() -> None:
    _check_swin_stream("swin_v2_t")

