"""Swin window attention and patch merging as traceable layers, so that heads and the
embedding dim of every stage can be pruned.

torchvision's ``ShiftedWindowAttention`` (Swin V1), ``ShiftedWindowAttentionV2`` and
``ShiftedWindowAttention3d`` (video Swin) call functions that torch.fx keeps as single
opaque calls, so nothing inside them could be pruned. :class:`DecomposedShiftedWindowAttention`
computes the same output with separate q/k/v ``nn.Linear`` layers, an explicit head reshape
and per-head position bias tables, with every size derived from the input's shape by
arithmetic rather than Python branches: padding to whole windows, the shift (dropped where
one window covers a side), the cyclic roll and the shifted-window mask (built with
vectorised comparisons). :class:`DecomposedPatchMerging` replaces ``PatchMerging`` and
``PatchMergingV2`` (also used by video Swin), whose wrapped padding-and-slicing function
otherwise pins the stream's channels at every merge.

Example:
    >>> import torch
    >>> from torchvision.models.swin_transformer import ShiftedWindowAttention
    >>> attn = ShiftedWindowAttention(8, [4, 4], [2, 2], num_heads=2).eval()
    >>> dec = DecomposedShiftedWindowAttention.from_module(attn)
    >>> x = torch.randn(1, 6, 10, 8)
    >>> torch.allclose(dec(x), attn(x), atol=1e-5)
    True
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fxrazor.errors import InvalidArgumentError

__all__ = ["DecomposedPatchMerging", "DecomposedShiftedWindowAttention"]

_SWIN_CLASSES = {"torchvision.models.swin_transformer": ("ShiftedWindowAttention",
                                                         "ShiftedWindowAttentionV2"),
                 "torchvision.models.video.swin_transformer": ("ShiftedWindowAttention3d",)}
_MERGE_CLASSES = {"torchvision.models.swin_transformer": ("PatchMerging", "PatchMergingV2")}


# (module path, class names) -> (the imported module, its classes of those names).
_RESOLVED: dict[tuple[str, tuple[str, ...]], tuple[Any, tuple[type, ...]]] = {}


def _is_one_of(cls: type, classes: Mapping[str, tuple[str, ...]]) -> bool:
    """Whether ``cls`` is exactly one of the named torchvision classes (asked of every
    module type of every converted model, so the classes are resolved once per imported
    module object: a reloaded module is resolved again)."""
    for path, names in classes.items():
        found = sys.modules.get(path)  # not imported: module cannot be one of its classes
        if found is None:
            continue
        cached = _RESOLVED.get((path, names))
        if cached is None or cached[0] is not found:
            cached = _RESOLVED[(path, names)] = (found, tuple(getattr(found, n) for n in names))
        if cls in cached[1]:
            return True
    return False


def _relative_position_index(window_size: Sequence[int], device: torch.device | str | None = None
                             ) -> torch.Tensor:
    """``[N, N]`` index into the prod(2w-1) relative offsets of every pair of positions."""
    grid = torch.meshgrid(*[torch.arange(w, device=device) for w in window_size], indexing="ij")
    coords = torch.stack(grid).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]
    index = torch.zeros_like(rel[0])
    for i, w in enumerate(window_size):
        stride = math.prod(2 * v - 1 for v in window_size[i + 1:])
        index = index + (rel[i] + w - 1) * stride
    return index


def _relative_coords_table(window_size: Sequence[int], device: torch.device | str | None = None
                           ) -> torch.Tensor:
    """Log-spaced relative offsets in [-1, 1]·8/3, the input of the V2 position-bias MLP."""
    wh, ww = window_size
    rows = torch.arange(-(wh - 1), wh, dtype=torch.float32, device=device)
    cols = torch.arange(-(ww - 1), ww, dtype=torch.float32, device=device)
    table = torch.stack(torch.meshgrid(rows, cols, indexing="ij")).permute(1, 2, 0).unsqueeze(0)
    table = table / torch.tensor([wh - 1, ww - 1], dtype=torch.float32, device=device) * 8
    return torch.sign(table) * torch.log2(torch.abs(table) + 1.0) / 3.0


def _supports_by_type(cls: Any, module: nn.Module) -> bool:
    """``supports(module)`` of a decomposition that replaces whole types: whether
    ``module``'s type is one its ``supports_type`` accepts."""
    return bool(cls.supports_type(type(module)))


class DecomposedShiftedWindowAttention(nn.Module):
    """Shifted-window multi-head self-attention over ``[B, *spatial, C]`` inputs (2 or 3
    spatial dims).

    Args:
        dim: channels C.
        window_size: window size per spatial dim.
        shift_size: cyclic shift of the windows (zeros for unshifted blocks).
        num_heads: attention heads.
        qkv_bias: whether the q/k/v projections have a bias (V2: never the key).
        proj_bias: whether the output projection has a bias.
        attention_dropout: dropout on the attention weights.
        dropout: dropout on the output.
        cosine: Swin V2 attention (cosine similarity with a learnt per-head logit scale and
            a position bias from a small MLP) instead of V1's scaled dot product and bias
            table; 2 spatial dims only.
        adapt_window: shrink the window to a side shorter than it (video Swin) rather than
            pad that side to a whole window.
        device: where to create the layers (``"meta"`` in :meth:`from_module`).

    Example:
        >>> attn = DecomposedShiftedWindowAttention(8, [4, 4], [2, 2], 2, cosine=True)
        >>> attn(torch.randn(2, 8, 8, 8)).shape
        torch.Size([2, 8, 8, 8])
    """

    relative_position_index: torch.Tensor

    def __init__(self, dim: int, window_size: Sequence[int], shift_size: Sequence[int],
                 num_heads: int, qkv_bias: bool = True, proj_bias: bool = True,
                 attention_dropout: float = 0.0, dropout: float = 0.0, cosine: bool = False,
                 adapt_window: bool = False, device: torch.device | str | None = None) -> None:
        super().__init__()
        _check_config(dim, window_size, shift_size, num_heads, cosine)
        self.window_size = tuple(int(w) for w in window_size)
        self.shift_size = tuple(int(s) for s in shift_size)
        self.num_heads = num_heads
        self.attention_dropout = attention_dropout
        self.dropout = dropout
        self.cosine = cosine
        self.adapt_window = adapt_window
        # kept as trained when heads or head dims are pruned
        self.scale = (dim // num_heads) ** -0.5
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias, device=device)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias and not cosine, device=device)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias, device=device)
        self.proj = nn.Linear(dim, dim, bias=proj_bias, device=device)
        index = _relative_position_index(self.window_size, device)
        # an adapted window cuts the square index; a fixed one gathers it flat
        self.register_buffer("relative_position_index",
                             index if adapt_window else index.flatten())
        if cosine:
            self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0),
                                                       device=device))
            self.cpb_mlp = nn.Sequential(nn.Linear(2, 512, device=device), nn.ReLU(inplace=True),
                                         nn.Linear(512, num_heads, bias=False, device=device))
            self.register_buffer("relative_coords_table",
                                 _relative_coords_table(self.window_size, device))
        else:
            offsets = math.prod(2 * w - 1 for w in self.window_size)
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros(offsets, num_heads, device=device))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    @staticmethod
    def supports_type(cls: type) -> bool:
        """Whether ``cls`` is exactly a torchvision Swin window attention (2-D V1 or V2,
        or 3-D)."""
        return _is_one_of(cls, _SWIN_CLASSES)


    supports = classmethod(_supports_by_type)

    @classmethod
    def from_module(cls, source: nn.Module) -> DecomposedShiftedWindowAttention:
        """The decomposition of a torchvision ``ShiftedWindowAttention`` (V2, 3d), with the
        same weights."""
        module: Any = source  # torchvision's attributes, which nn.Module does not declare
        cosine = hasattr(module, "logit_scale")
        dim = module.proj.in_features
        qkv_bias = module.qkv.bias is not None
        dec = cls(dim, module.window_size, module.shift_size, module.num_heads,
                  qkv_bias=qkv_bias, proj_bias=module.proj.bias is not None,
                  attention_dropout=module.attention_dropout, dropout=module.dropout,
                  cosine=cosine, adapt_window=len(module.window_size) == 3, device="meta")
        state = {k: v.detach() for k, v in module.state_dict().items()
                 if not k.startswith("qkv.")}
        for name, weight in zip(("q", "k", "v"), module.qkv.weight.split(dim), strict=True):
            state[f"{name}_proj.weight"] = weight.detach()
        if qkv_bias:
            for name, bias in zip(("q", "k", "v"), module.qkv.bias.split(dim), strict=True):
                if name != "k" or not cosine:  # V2 zeroes the key bias in every forward
                    state[f"{name}_proj.bias"] = bias.detach()
        dec.load_state_dict(state, assign=True)
        return dec.train(module.training)

    @property
    def shifted(self) -> bool:
        """Whether this block shifts its windows (fixed when built)."""
        return any(s > 0 for s in self.shift_size)

    def _windows(self, sizes: list) -> tuple[list, list]:
        """Window and shift per side for an input of ``sizes``: a side no longer than the
        window is one window and is not shifted. ``1 // (1 + (s - 1) // w)`` is 1 for such
        a side and 0 otherwise, so traced sizes need no branch."""
        if not self.shifted and not self.adapt_window:
            return list(self.window_size), [0] * len(sizes)
        one = [1 // (1 + (s - 1) // w) for s, w in zip(sizes, self.window_size, strict=True)]
        shifts = [sh * (1 - k) for sh, k in zip(self.shift_size, one, strict=True)]
        if not self.adapt_window:
            return list(self.window_size), shifts
        return [w + (s - w) * k for s, w, k in zip(sizes, self.window_size, one, strict=True)], \
            shifts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nd = len(self.window_size)
        b, sizes = x.shape[0], [x.shape[1 + i] for i in range(nd)]
        wins, shifts = self._windows(sizes)
        pads = [(w - s % w) % w for s, w in zip(sizes, wins, strict=True)]
        x = F.pad(x, [0, 0] + [a for p in reversed(pads) for a in (0, p)])
        padded = [s + p for s, p in zip(sizes, pads, strict=True)]
        spatial = tuple(range(1, nd + 1))
        if self.shifted:
            x = torch.roll(x, shifts=tuple(-s for s in shifts), dims=spatial)
        counts = [p // w for p, w in zip(padded, wins, strict=True)]
        n, num_windows = _product(wins), _product(counts)
        split = [v for c, w in zip(counts, wins, strict=True) for v in (c, w)]
        windows = x.view(b, *split, -1).permute(0, *range(1, 2 * nd, 2), *range(2, 2 * nd + 1, 2),
                                               2 * nd + 1)
        windows = windows.reshape(b * num_windows, n, -1)
        attn = self._scores(windows, n)
        if self.shifted:
            mask = self._shift_mask(padded, wins, shifts, x)
            attn = attn.view(b, num_windows, -1, n, n) + mask.unsqueeze(1)
            attn = attn.flatten(0, 1)
        out = self._mix(attn, windows).view(b, *counts, *wins, -1)
        out = out.permute(0, *[v for i in range(1, nd + 1) for v in (i, i + nd)], 2 * nd + 1)
        out = out.reshape(b, *padded, -1)
        if self.shifted:
            out = torch.roll(out, shifts=tuple(shifts), dims=spatial)
        for d, s in zip(spatial, sizes, strict=True):
            out = out.narrow(d, 0, s)
        return out.contiguous()

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[B', N, heads·d]`` → ``[B', heads, N, d]``."""
        return x.view(x.shape[0], x.shape[1], self.num_heads, -1).transpose(1, 2)

    def _scores(self, windows: torch.Tensor, n: int) -> torch.Tensor:
        """Attention logits ``[B', heads, N, N]`` with the relative position bias."""
        q, k = self._heads(self.q_proj(windows)), self._heads(self.k_proj(windows))
        if self.cosine:
            attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
            attn = attn * torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        else:
            attn = (q * self.scale).matmul(k.transpose(-2, -1))
        return attn + self._position_bias(n)

    def _position_bias(self, n: int) -> torch.Tensor:
        """The per-head bias ``[heads, N, N]`` of every pair of the N window positions."""
        if self.cosine:
            table = self.cpb_mlp(self.relative_coords_table).flatten(0, -2)
        else:
            table = self.relative_position_bias_table
        index = self.relative_position_index
        if self.adapt_window:  # torchvision cuts the full window's index to the first n
            index = index.narrow(0, 0, n).narrow(1, 0, n).flatten()
        bias = table[index].view(n, n, -1).permute(2, 0, 1)
        return 16 * torch.sigmoid(bias) if self.cosine else bias

    def _mix(self, attn: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """Softmax, weighted values and output projection: ``[B', N, C]``."""
        attn = F.dropout(F.softmax(attn, dim=-1), p=self.attention_dropout,
                         training=self.training)
        v = self._heads(self.v_proj(windows))
        out = attn.matmul(v).transpose(1, 2)
        out = self.proj(out.reshape(out.shape[0], out.shape[1], -1))
        return F.dropout(out, p=self.dropout, training=self.training)

    def _shift_mask(self, padded: list, wins: list, shifts: list, like: torch.Tensor
                    ) -> torch.Tensor:
        """``[windows, N, N]``: -100 between positions that the roll brought from different
        regions of the feature map, 0 elsewhere."""
        nd = len(padded)
        region = torch.zeros((), dtype=torch.int64, device=like.device)
        for i, (p, w, s) in enumerate(zip(padded, wins, shifts, strict=True)):
            view = [1] * nd
            view[i] = p
            region = region * 3 + _regions(p, w, s, like).view(view)
        split = [v for p, w in zip(padded, wins, strict=True) for v in (p // w, w)]
        region = region.view(split).permute(*range(0, 2 * nd, 2), *range(1, 2 * nd, 2))
        region = region.reshape(-1, _product(wins))
        differ = region[:, None, :] != region[:, :, None]
        return torch.zeros_like(differ, dtype=like.dtype).masked_fill(differ, -100.0)


def _check_config(dim: int, window_size: Sequence[int], shift_size: Sequence[int],
                  num_heads: int, cosine: bool) -> None:
    where = "DecomposedShiftedWindowAttention"
    if len(window_size) not in (2, 3) or len(shift_size) != len(window_size):
        raise InvalidArgumentError(
            f"{where}: window_size and shift_size must both have 2 (images) or 3 (videos) "
            f"entries, got {list(window_size)} and {list(shift_size)}")
    if any(w < 1 for w in window_size) or any(s < 0 for s in shift_size):
        raise InvalidArgumentError(
            f"{where}: windows must be at least 1 and shifts at least 0, got window_size="
            f"{list(window_size)}, shift_size={list(shift_size)}")
    if num_heads < 1 or dim % num_heads:
        raise InvalidArgumentError(
            f"{where}: dim={dim} must split into num_heads={num_heads} equal heads; pick a "
            f"num_heads that divides dim")
    if cosine and len(window_size) != 2:
        raise InvalidArgumentError(
            f"{where}: cosine (Swin V2) attention needs a 2-D window, got {list(window_size)}")


def _product(values: list) -> Any:
    """The product of sizes; on traced sizes a chain of multiplications (torch.fx records
    ``math.prod`` as one call, which TorchScript cannot compile)."""
    out = values[0]
    for v in values[1:]:
        out = out * v
    return out


def _regions(size: int, window: int, shift: int, like: torch.Tensor) -> torch.Tensor:
    """Region of each position along one padded side after the roll: 0 before the last
    window, 1 in it up to the wrapped-around part, 2 in the wrapped-around part."""
    pos = torch.arange(size, device=like.device)
    return (pos >= size - window).long() + (pos >= size - shift).long()


class DecomposedPatchMerging(nn.Module):
    """Swin patch merging over ``[..., H, W, C]`` inputs (images, or videos with a time dim):
    each 2x2 patch's four pixels side by side on the channel dim, then ``norm`` and the
    ``reduction`` to 2C channels (V2: the reduction first).

    torchvision's ``PatchMerging`` hides the padding and the four strided slices in one
    wrapped function; here they are traced ops, so the analysis sees the same C channels
    concatenated four times and the stream's channels can be pruned across the merge.
    Odd sides are padded by ``side % 2``, arithmetic that traced sizes record.

    Args:
        dim: input channels C.
        norm: normalisation of the 4C concatenation (V1) or the 2C reduction (V2); the
            default is a LayerNorm of the right width.
        norm_first: V1's order (norm, then reduction) rather than V2's.
        device: where to create the reduction (``"meta"`` in :meth:`from_module`).

    Example:
        >>> merge = DecomposedPatchMerging(8)
        >>> merge(torch.randn(2, 5, 7, 8)).shape
        torch.Size([2, 3, 4, 16])
    """

    def __init__(self, dim: int, norm: nn.Module | None = None, norm_first: bool = True,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if dim < 1:
            raise InvalidArgumentError(f"DecomposedPatchMerging: dim must be at least 1, "
                                       f"got {dim}")
        self.norm_first = norm_first
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False, device=device)
        self.norm = norm if norm is not None else nn.LayerNorm(
            (4 if norm_first else 2) * dim, device=device)

    @staticmethod
    def supports_type(cls: type) -> bool:
        """Whether ``cls`` is exactly torchvision's ``PatchMerging`` or ``PatchMergingV2``."""
        return _is_one_of(cls, _MERGE_CLASSES)


    supports = classmethod(_supports_by_type)

    @classmethod
    def from_module(cls, source: nn.Module) -> DecomposedPatchMerging:
        """The decomposition of a torchvision ``PatchMerging`` (V2), with copies of its
        ``reduction`` and ``norm``."""
        module: Any = source  # torchvision's attributes, which nn.Module does not declare
        norm_first = type(module).__name__ == "PatchMerging"
        # the replaced layer's own norm and reduction: decomposition only runs on a model
        # that may be changed, so nothing is copied
        dec = cls(module.dim, module.norm, norm_first, device="meta")
        dec.reduction = module.reduction
        return dec.train(module.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-3], x.shape[-2]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # torchvision's order: (even, even), (odd, even), (even, odd), (odd, odd) rows/cols
        x = torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :],
                       x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]], -1)
        if self.norm_first:
            return self.reduction(self.norm(x))
        return self.norm(self.reduction(x))
