"""Swin's shifted-window attention and patch merging decomposed (fxrazor.decompose.swin):
each computes what torchvision's layer computes, for every input size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

torchvision = pytest.importorskip("torchvision")


def _swin_attention(version: int, shift: list[int]) -> nn.Module:
    """A torchvision Swin window attention: 1 and 2 (V1, V2; 4x4 windows) or 3 (video)."""
    from torchvision.models import swin_transformer as swin
    from torchvision.models.video import swin_transformer as swin3d

    if version == 3:
        attn = swin3d.ShiftedWindowAttention3d(16, [2, 4, 4], [1, *shift], num_heads=4)
    else:
        cls = swin.ShiftedWindowAttention if version == 1 else swin.ShiftedWindowAttentionV2
        attn = cls(16, [4, 4], shift, num_heads=4)
    with torch.no_grad():  # move V2's parameters off their initial values
        for p in attn.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return attn.eval()


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("shift", [[2, 2], [3, 1], [0, 0]])
def test_decomposed_swin_attention_equals_torchvision(version, shift) -> None:
    from fxrazor.decompose.swin import DecomposedShiftedWindowAttention

    torch.manual_seed(0)
    attn = _swin_attention(version, shift)
    dec = DecomposedShiftedWindowAttention.from_module(attn)
    traced = torch.fx.symbolic_trace(dec)  # one graph for every input size: no baked sizes
    # whole windows; padding; one window per side (the shift drops to 0); mixed; 1 row
    sizes = [(8, 8), (6, 10), (3, 3), (4, 9), (1, 5)]
    if version == 3:  # frames: whole windows, padded, shorter than the window (it adapts)
        sizes = [(t, *hw) for t, hw in zip([4, 3, 1, 2, 5], sizes, strict=True)]
    for size in sizes:
        x = torch.randn(2, *size, 16)
        with torch.no_grad():
            ref = attn(x)
            torch.testing.assert_close(dec(x), ref)
            torch.testing.assert_close(traced(x), ref)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_decomposed_swin_attention_builds_torchvision_buffers(version) -> None:
    from fxrazor.decompose.swin import DecomposedShiftedWindowAttention

    attn = _swin_attention(version, [2, 2])
    fresh = DecomposedShiftedWindowAttention(16, attn.window_size, attn.shift_size, 4,
                                             cosine=version == 2, adapt_window=version == 3)
    torch.testing.assert_close(fresh.relative_position_index, attn.relative_position_index)
    if version == 2:
        torch.testing.assert_close(fresh.relative_coords_table, attn.relative_coords_table)
        assert fresh.k_proj.bias is None  # every V2 forward zeroes the key bias
    else:
        assert fresh.relative_position_bias_table.shape == attn.relative_position_bias_table.shape


@pytest.mark.parametrize(("window", "shift", "heads", "cosine", "words"), [
    ([4], [2], 2, False, "must both have 2"),
    ([4, 4], [2, -1], 2, False, "shifts at least 0"),
    ([4, 4], [2, 2], 3, False, "equal heads"),
    ([2, 4, 4], [0, 0, 0], 2, True, "needs a 2-D window"),
])
def test_decomposed_swin_attention_rejects_bad_config(window, shift, heads, cosine, words) -> None:
    from fxrazor.decompose.swin import DecomposedShiftedWindowAttention
    from fxrazor.errors import FxRazorError

    with pytest.raises(FxRazorError, match=words):
        DecomposedShiftedWindowAttention(8, window, shift, heads, cosine=cosine)


def _patch_merging(version: int, dim: int = 6) -> nn.Module:
    """A torchvision Swin patch merging (V1 or V2) with a non-trivial norm."""
    from torchvision.models import swin_transformer as swin

    merge = (swin.PatchMerging if version == 1 else swin.PatchMergingV2)(dim)
    with torch.no_grad():
        for p in merge.norm.parameters():
            p.add_(torch.randn_like(p))
    return merge.eval()


@pytest.mark.parametrize("version", [1, 2])
def test_decomposed_patch_merging_equals_torchvision(version) -> None:
    from fxrazor.decompose.swin import DecomposedPatchMerging

    torch.manual_seed(0)
    merge = _patch_merging(version)
    dec = DecomposedPatchMerging.from_module(merge)
    assert dec.reduction is merge.reduction and dec.norm is merge.norm  # taken over, not copied
    traced = torch.fx.symbolic_trace(dec)  # one graph for every size: the padding is traced
    # even; odd both ways; odd one way; a single pixel; video ([B, T, H, W, C], video Swin)
    for size in [(8, 8), (5, 7), (4, 3), (1, 1), (3, 5, 6)]:
        x = torch.randn(2, *size, 6)
        with torch.no_grad():
            ref = merge(x)
            torch.testing.assert_close(dec(x), ref, rtol=0, atol=0)
            torch.testing.assert_close(traced(x), ref, rtol=0, atol=0)
    ops = [n.target for n in traced.graph.nodes if n.op == "call_function"]
    assert ops.count(torch.cat) == 1 and "_patch_merging_pad" not in str(traced.code)


def test_decompose_modules_replaces_patch_merging() -> None:
    import copy

    from fxrazor.decompose import decompose_modules
    from fxrazor.decompose.swin import DecomposedPatchMerging
    from fxrazor.errors import FxRazorError

    torch.manual_seed(0)
    model = nn.Sequential(_patch_merging(1), nn.GELU(), _patch_merging(2, 12))
    ref = copy.deepcopy(model)
    assert decompose_modules(model) == ["0", "2"]
    # by name: collecting the module's doctests imports a second copy of its classes
    assert [type(m).__name__ for m in model] == ["DecomposedPatchMerging", "GELU",
                                                 "DecomposedPatchMerging"]
    assert model[0].norm_first and not model[2].norm_first
    x = torch.randn(1, 5, 3, 6)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)
    with pytest.raises(FxRazorError, match="dim must be at least 1"):
        DecomposedPatchMerging(0)
