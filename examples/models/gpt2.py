"""A small GPT-2-style decoder-only language model, written to be traced by torch.fx.

Token and learned position embeddings are summed; per block: LayerNorm → causal
self-attention with one fused q/k/v projection → residual; LayerNorm → GELU MLP →
residual. A final LayerNorm and an LM head tied to the token embedding give the logits.

Attention runs either through ``F.scaled_dot_product_attention`` or written out as
matmul → causal mask → softmax → matmul (``attention="matmul"``); both compute the same.

Example:
    >>> import torch
    >>> cfg = GPT2Config(vocab_size=32, hidden_size=16, num_layers=1, num_heads=2,
    ...                  max_seq_len=8)
    >>> GPT2(cfg)(torch.randint(0, 32, (2, 5))).shape
    torch.Size([2, 5, 32])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GPT2Config", "GPT2", "GPT2Block", "GPT2Attention", "GPT2MLP"]


@dataclass(frozen=True)
class GPT2Config:
    """Sizes of a GPT-2-style model.

    Attributes:
        vocab_size: number of tokens.
        hidden_size: width of the residual stream.
        num_layers: number of blocks.
        num_heads: attention heads; ``hidden_size`` must be a multiple of it.
        max_seq_len: number of learned positions.
        mlp_ratio: MLP hidden width as a multiple of ``hidden_size``.
        ln_eps: epsilon of the LayerNorms.
        attention: ``"sdpa"`` or ``"matmul"`` (explicit scores, mask and softmax).
        tie_embeddings: whether the LM head shares the token embedding's weight.
    """

    vocab_size: int = 128
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    max_seq_len: int = 32
    mlp_ratio: int = 4
    ln_eps: float = 1e-5
    attention: str = "sdpa"
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_heads {self.num_heads}")
        if self.attention not in ("sdpa", "matmul"):
            raise ValueError(f"attention must be 'sdpa' or 'matmul', got {self.attention!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class GPT2Attention(nn.Module):
    """Causal multi-head self-attention with a fused q/k/v projection."""

    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.num_heads, self.hidden = cfg.num_heads, cfg.hidden_size
        self.c_attn = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.c_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.use_sdpa = cfg.attention == "sdpa"
        # fixed at the trained head dim so that pruning head dims keeps the trained scale
        self.scale = 1.0 / math.sqrt(cfg.head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s = x.shape[0], x.shape[1]
        q, k, v = self.c_attn(x).split(self.hidden, dim=2)
        q = q.view(b, s, self.num_heads, -1).transpose(1, 2)
        k = k.view(b, s, self.num_heads, -1).transpose(1, 2)
        v = v.view(b, s, self.num_heads, -1).transpose(1, 2)
        if self.use_sdpa:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        else:
            out = causal_attention(q, k, v, self.scale)
        return self.c_proj(out.transpose(1, 2).reshape(b, s, -1))


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """softmax(q kᵀ · scale, future positions masked) v, for (batch, heads, seq, dim)."""
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    # from positions rather than torch.ones(s, s).triu(1): torch.fx cannot trace a factory
    # call whose sizes are traced values passed as several positional arguments
    pos = torch.arange(q.shape[2], device=q.device)
    future = pos[None, :] > pos[:, None]
    scores = scores.masked_fill(future, float("-inf"))
    return torch.matmul(scores.softmax(dim=-1), v)


class GPT2MLP(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.hidden_size, cfg.mlp_ratio * cfg.hidden_size)
        self.act = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(cfg.mlp_ratio * cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class GPT2Block(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.ln_eps)
        self.attn = GPT2Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.ln_eps)
        self.mlp = GPT2MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    """token ids (batch, seq) → logits (batch, seq, vocab)."""

    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.wpe = nn.Embedding(cfg.max_seq_len, cfg.hidden_size)
        self.blocks = nn.ModuleList(GPT2Block(cfg) for _ in range(cfg.num_layers))
        self.ln_f = nn.LayerNorm(cfg.hidden_size, eps=cfg.ln_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(_init_weights)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(positions)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)) and not module.weight.is_meta:
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None and not module.bias.is_meta:
        # non-zero biases, so that a wrongly sliced bias shows in the outputs
        nn.init.normal_(module.bias, std=0.02)
