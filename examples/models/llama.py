"""A small Llama-style decoder-only language model, written to be traced by torch.fx.

Per layer: RMSNorm → attention (q/k/v/o projections without bias, rotary position
embeddings, grouped-query attention, causal scaled-dot-product attention) → residual;
RMSNorm → SwiGLU MLP → residual. A final RMSNorm and an LM head (optionally tied to the
token embedding) give the logits.

Everything in ``forward`` depends on tensor *shapes* only, never on tensor values, so
symbolic tracing follows it exactly. Sizes are read with ``x.shape`` so that a pruned
model (fewer heads, a smaller head dim) computes with its own widths.

Rotary angles are computed per call from each layer's ``inv_freq`` buffer rather than
sliced from precomputed cos/sin tables: ``table[:seq]`` with a traced ``seq`` cannot be
traced by torch.fx on a buffer, and ``table.narrow(0, 0, seq)`` has no channel rule, which
would pin every q/k head dim under head-dim pruning. Computed angles let pruning slice
``inv_freq`` along with the q/k rows it rotates.

Example:
    >>> import torch
    >>> cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_layers=1,
    ...                   num_heads=4, num_kv_heads=2, max_seq_len=8)
    >>> model = Llama(cfg)
    >>> model(torch.randint(0, 32, (2, 5))).shape
    torch.Size([2, 5, 32])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LlamaConfig", "Llama", "LlamaBlock", "LlamaAttention", "SwiGLU", "rotate_half",
           "rotary_angles", "inverse_frequencies", "repeat_kv"]


@dataclass(frozen=True)
class LlamaConfig:
    """Sizes of a Llama-style model.

    Attributes:
        vocab_size: number of tokens.
        hidden_size: width of the residual stream.
        intermediate_size: hidden width of the SwiGLU MLP.
        num_layers: number of decoder blocks.
        num_heads: query heads.
        num_kv_heads: key/value heads; ``num_heads`` must be a multiple of it.
        max_seq_len: longest sequence the model is meant for (informational: the
            rotary angles are computed per call, so nothing is sized by it).
        rms_eps: epsilon of the RMS norms.
        rope_theta: base of the rotary frequencies.
        tie_embeddings: whether the LM head shares the token embedding's weight.
    """

    vocab_size: int = 128
    hidden_size: int = 64
    intermediate_size: int = 160
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_seq_len: int = 32
    rms_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of "
                             f"num_kv_heads {self.num_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head_dim, got {self.head_dim}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def inverse_frequencies(cfg: LlamaConfig) -> torch.Tensor:
    """The head_dim/2 rotary frequencies theta^(-2i/head_dim)."""
    half = cfg.head_dim // 2
    return cfg.rope_theta ** (-torch.arange(half, dtype=torch.float32) / half)


def rotary_angles(positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """(seq,) positions → (seq, head_dim) angles; columns i and i + head_dim/2 share a
    frequency, matching :func:`rotate_half`."""
    # inv_freq is used whole (no indexing) so that tracing records it as a graph attribute
    # that pruning can slice, not as a precomputed constant
    angles = positions[:, None].to(inv_freq.dtype) * inv_freq
    return torch.cat([angles, angles], dim=-1)


def rotate_half(x: torch.Tensor, half: int) -> torch.Tensor:
    """(x1, x2) → (-x2, x1) over the last dim of a (batch, heads, seq, head_dim) tensor,
    whose first ``half`` entries are x1.

    ``half`` is a Python int (not ``x.shape[-1] // 2``) so that it stays a literal in the
    traced graph, which pruning rewrites when head dims are removed. The slices name every
    dim rather than using ``...``: fxrazor 0.1 mislocates a slice that follows an Ellipsis
    when it rewrites the bound.
    """
    return torch.cat([-x[:, :, :, half:], x[:, :, :, :half]], dim=-1)


class LlamaAttention(nn.Module):
    """Grouped-query attention with rotary position embeddings and a causal mask.

    Each attention layer owns its rotary frequencies (a buffer, not a parameter): a table
    shared by all layers would tie the head dims of every layer together under pruning,
    since removing a frequency pair would remove it from every layer at once.
    """

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        d = cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, d
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_heads * d, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * d, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * d, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * d, cfg.hidden_size, bias=False)
        self.register_buffer("inv_freq", inverse_frequencies(cfg), persistent=False)
        # fixed at the trained head dim so that pruning head dims keeps the trained scale
        self.scale = 1.0 / math.sqrt(d)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        b, s = x.shape[0], x.shape[1]
        # (b, s, heads*d) → (b, heads, s, d); -1 lets a pruned model keep its own head dim
        q = self.q_proj(x).view(b, s, self.num_heads, -1).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.num_kv_heads, -1).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.num_kv_heads, -1).transpose(1, 2)
        angles = rotary_angles(positions, self.inv_freq)
        cos, sin = angles.cos(), angles.sin()
        half = self.head_dim // 2
        q = q * cos + rotate_half(q, half) * sin
        k = k * cos + rotate_half(k, half) * sin
        n_rep = self.num_heads // self.num_kv_heads
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1))


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(b, kv_heads, s, d) → (b, kv_heads*n_rep, s, d): each KV head serves n_rep query
    heads, adjacent in the query head order."""
    b, kv, s, d = x.shape
    return x[:, :, None].expand(b, kv, n_rep, s, d).reshape(b, kv * n_rep, s, d)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_eps)
        self.attn = LlamaAttention(cfg)
        self.mlp_norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_eps)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), positions)
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    """token ids (batch, seq) → logits (batch, seq, vocab)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(LlamaBlock(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.apply(_init_weights)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x, positions)
        return self.lm_head(self.norm(x))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)) and not module.weight.is_meta:
        nn.init.normal_(module.weight, std=0.02)
