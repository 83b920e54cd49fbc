"""Prune attention heads and MLP width of a small Llama-style model, end to end.

Builds a tiny Llama-style decoder (grouped-query attention: 8 query heads over 4 KV heads),
converts it with ``split_dims="outer"`` so that attention units remove whole heads (whole
KV groups: one KV head with its query heads), prints ``fxrazor.summary``, halves every
attention and MLP unit (the residual stream keeps its width), freezes, and checks that the
frozen model's logits equal the supernet's. Exits with status 1 if not.

Run: ``python examples/prune_llm.py``
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tabulate import tabulate

import fxrazor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models.llama import Llama, LlamaConfig  # noqa: E402

SEED = 0


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> int:
    torch.manual_seed(SEED)
    cfg = LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=344, num_layers=2,
                      num_heads=8, num_kv_heads=4, max_seq_len=32)
    model = Llama(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 24))

    supernet = fxrazor.convert(model, ids, split_dims="outer")
    print(fxrazor.summary(supernet))

    # attention units are named after q_proj, MLP units after gate_proj; the residual
    # stream (named after the embedding) keeps its width
    half = {u.name: u.num_channels // 2 for u in supernet.units
            if u.name.endswith(("attn.q_proj", "mlp.gate_proj"))}
    supernet.set_choices(half)
    frozen = fxrazor.freeze(supernet)

    attn = frozen.get_submodule("layers.0.attn")
    rows = [["params", count_params(model), count_params(frozen)],
            ["query heads (layer 0)", cfg.num_heads, attn.q_proj.out_features // cfg.head_dim],
            ["KV heads (layer 0)", cfg.num_kv_heads, attn.k_proj.out_features // cfg.head_dim],
            ["MLP width (layer 0)", cfg.intermediate_size,
             frozen.get_submodule("layers.0.mlp.gate_proj").out_features]]
    print(tabulate(rows, headers=["", "original", "pruned"]))

    with torch.no_grad():
        diff = (frozen(ids) - supernet(ids)).abs().max().item()
    print(f"max |frozen - supernet| logits: {diff:.2e}")
    if diff > 1e-5:
        print("FAIL: the frozen model does not compute the supernet's logits")
        return 1
    print("OK: frozen logits match the supernet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
