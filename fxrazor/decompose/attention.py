"""A traceable ``nn.MultiheadAttention``: separate projections and an explicit head split.

``nn.MultiheadAttention`` hides its q/k/v projections, head split and output projection
inside one fused kernel, so nothing inside it could be pruned. It is replaced (in the
private copy that ``convert`` traces) by :class:`DecomposedMultiheadAttention`: separate
``nn.Linear`` projections, an explicit head reshape and ``scaled_dot_product_attention``
with the original scale kept as a constant, so heads, head dims and the embedding dim become
prunable and the frozen model is made of plain layers.

Example:
    >>> import torch
    >>> from torch import nn
    >>> mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    >>> x = torch.randn(1, 3, 8)
    >>> dec = DecomposedMultiheadAttention.from_module(mha)
    >>> torch.allclose(dec(x, x, x)[0], mha(x, x, x)[0], atol=1e-6)
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DecomposedMultiheadAttention"]


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    # No copy: the decomposed layer takes over the replaced one's memory (its slices of the
    # fused projection), as decomposition only runs on a model that may be changed.
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    layer.weight = nn.Parameter(weight.detach(), weight.requires_grad)
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach(), bias.requires_grad)
    return layer


class DecomposedMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` as separate projections and scaled dot-product attention."""

    # torch's transformer layers read these to decide on their fused fast path, which needs
    # the packed projection; a decomposed attention has none, and None makes them take the
    # plain path (that calls this module), where an opaque layer around it runs as before.
    in_proj_bias: torch.Tensor | None = None
    _qkv_same_embed_dim = False

    def __init__(self, q_proj: nn.Linear, k_proj: nn.Linear, v_proj: nn.Linear,
                 out_proj: nn.Linear, num_heads: int, dropout: float, batch_first: bool) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = q_proj, k_proj, v_proj, out_proj
        self.num_heads = num_heads
        self.head_dim = q_proj.out_features // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)  # kept as trained when head dims shrink
        self.dropout = dropout
        self.batch_first = batch_first

    @staticmethod
    def supports_type(cls: type) -> bool:
        """Whether modules of type ``cls`` may be replaced (``nn.MultiheadAttention`` and its
        subclasses; :meth:`supports` says for one module)."""
        return issubclass(cls, nn.MultiheadAttention)

    @classmethod
    def supports(cls, module: nn.Module) -> bool:
        """Whether ``module`` is an ``nn.MultiheadAttention`` this class can replace (no
        ``bias_k``/``bias_v``, no ``add_zero_attn``)."""
        return (cls.supports_type(type(module)) and module.bias_k is None
                and module.bias_v is None and not module.add_zero_attn)

    @classmethod
    def from_module(cls, mha: nn.MultiheadAttention) -> DecomposedMultiheadAttention:
        e = mha.embed_dim
        bias = mha.in_proj_bias
        if mha._qkv_same_embed_dim:
            weights = mha.in_proj_weight.split(e)
        else:
            weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
        biases = bias.split(e) if bias is not None else (None, None, None)
        projs = [_linear(w, b) for w, b in zip(weights, biases, strict=True)]
        out = _linear(mha.out_proj.weight, mha.out_proj.bias)
        q, k, v = projs
        dec = cls(q, k, v, out, mha.num_heads, mha.dropout, mha.batch_first)
        return dec.train(mha.training)

    def to_static(self) -> nn.MultiheadAttention:
        """An equivalent ``nn.MultiheadAttention`` (only for unpruned widths)."""
        e = self.q_proj.in_features
        mha = nn.MultiheadAttention(e, self.num_heads, self.dropout,
                                    bias=self.q_proj.bias is not None,
                                    batch_first=self.batch_first, device="meta")
        with torch.no_grad():
            weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
            mha.in_proj_weight = nn.Parameter(weight.detach().clone())
            if self.q_proj.bias is not None:
                bias = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
                mha.in_proj_bias = nn.Parameter(bias.detach().clone())
            mha.out_proj.weight = nn.Parameter(self.out_proj.weight.detach().clone())
            if self.out_proj.bias is not None:
                mha.out_proj.bias = nn.Parameter(self.out_proj.bias.detach().clone())
        return mha.train(self.training)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, length = x.shape[0], x.shape[1]
        return x.view(n, length, self.num_heads, self.head_dim).transpose(1, 2)

    def _mask(self, query: torch.Tensor, key: torch.Tensor, key_padding_mask: Any,
              attn_mask: Any) -> Any:
        n, length, s = query.shape[0], query.shape[1], key.shape[1]
        mask = None
        if attn_mask is not None:
            mask = _float_mask(attn_mask, query.dtype)
            mask = mask.view(n, self.num_heads, length, s) if mask.dim() == 3 else mask
        if key_padding_mask is not None:
            pad = _float_mask(key_padding_mask, query.dtype).view(n, 1, 1, s)
            mask = pad if mask is None else mask + pad
        return mask

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(key))
        v = self._heads(self.v_proj(value))
        mask = self._mask(query, key, key_padding_mask, attn_mask)
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale
            if mask is not None:
                scores = scores + mask
            probs = F.softmax(scores, dim=-1)
            out = torch.matmul(F.dropout(probs, p, self.training), v)
            weights = probs.mean(dim=1) if average_attn_weights else probs
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                                 is_causal=is_causal and mask is None,
                                                 scale=self.scale)
        out = out.transpose(1, 2)
        out = self.out_proj(out.reshape(out.shape[0], out.shape[1], -1))
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights


def _float_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            mask, float("-inf"))
    return mask.to(dtype)
