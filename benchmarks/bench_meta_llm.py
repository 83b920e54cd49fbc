"""Convert a Llama-2-7B-shaped model on the meta device: time, peak memory, units, freeze.

The model (32 layers, hidden 4096, MLP 11008, 32 heads, 32 KV heads, vocab 32000; the
Llama-style decoder of ``examples/models/llama.py``) is built under
``torch.device("meta")``, so no weight is allocated, and converted with token ids 1x16 on
CPU, once per ``split_dims`` mode. Each conversion runs in a fresh Python process so that
its peak RSS (``ru_maxrss``) is its own; the RSS right after the imports is reported too.
Goals: convert <= 10 s and peak RSS <= 1.5 GB.

Each child also sets every unit to half width, freezes on meta and checks the frozen
weight shapes by hand (q/k/v/o, gate/up/down, norms, embedding, LM head halved where the
architecture says). Then, in this process, a scaled-down config (2 layers, hidden 256,
grouped-query attention) is converted both on meta and on CPU: the unit names, sizes and
member layouts must be equal, and the frozen CPU subnet must compute the supernet's logits.

Exits 1 if a check fails, never because of a timing or memory goal.

Run: ``python benchmarks/bench_meta_llm.py``  (~40 s)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import print_table

import fxrazor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from models.llama import Llama, LlamaConfig  # noqa: E402

__all__ = ["main", "LLAMA2_7B", "SMALL", "expected_half_shapes"]

LLAMA2_7B = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                        num_layers=32, num_heads=32, num_kv_heads=32, max_seq_len=4096,
                        rms_eps=1e-5)
SMALL = LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=688, num_layers=2,
                    num_heads=4, num_kv_heads=2, max_seq_len=64, rms_eps=1e-5)
GOAL_SECONDS, GOAL_MB = 10.0, 1536.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def expected_half_shapes(cfg: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Weight shapes of layer 0, the embedding and the LM head at half width.

    Both split modes halve the same widths: head-dim pruning keeps every head at half its
    dims, whole-head pruning keeps half the (KV-group) heads at full dims.
    """
    h, q, kv, m = (cfg.hidden_size // 2, cfg.num_heads * cfg.head_dim // 2,
                   cfg.num_kv_heads * cfg.head_dim // 2, cfg.intermediate_size // 2)
    return {"embed": (cfg.vocab_size, h), "lm_head": (cfg.vocab_size, h), "norm": (h,),
            "layers.0.attn_norm": (h,), "layers.0.attn.q_proj": (q, h),
            "layers.0.attn.k_proj": (kv, h), "layers.0.attn.v_proj": (kv, h),
            "layers.0.attn.o_proj": (h, q), "layers.0.mlp.gate_proj": (m, h),
            "layers.0.mlp.up_proj": (m, h), "layers.0.mlp.down_proj": (h, m)}


def _half(sn: fxrazor.Supernet) -> None:
    sn.set_choices({u.name: max(1, u.num_channels // 2) for u in sn.units})


def child(split_dims: str) -> None:
    """Convert the 7B config on meta and print one JSON line of measurements."""
    import_mb = _peak_mb()
    with torch.device("meta"):
        model = Llama(LLAMA2_7B)
    ids = torch.zeros(1, 16, dtype=torch.long)
    start = time.perf_counter()
    sn = fxrazor.convert(model, ids, split_dims=split_dims)
    convert_s = time.perf_counter() - start
    convert_mb = _peak_mb()
    _half(sn)
    start = time.perf_counter()
    frozen = fxrazor.freeze(sn)
    freeze_s = time.perf_counter() - start
    shapes = {n: tuple(frozen.get_submodule(n).weight.shape) for n in expected_half_shapes(
        LLAMA2_7B)}
    print(json.dumps({"split_dims": split_dims, "convert_s": convert_s, "freeze_s": freeze_s,
                      "import_mb": import_mb, "peak_mb": convert_mb, "units": len(sn.units),
                      "shapes_ok": shapes == expected_half_shapes(LLAMA2_7B),
                      "shapes": {k: list(v) for k, v in shapes.items()}}))


def _run_child(split_dims: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", split_dims],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"child {split_dims} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _layout(sn: fxrazor.Supernet) -> list[tuple]:
    return [(u.name, u.num_channels,
             tuple((e["name"], e["start"], e["end"], e["expand_ratio"], str(e.get("index")))
                   for e in [*u.output_related, *u.input_related])) for u in sn.units]


def small_meta_matches_cpu(split_dims: str) -> bool:
    """Same units on meta and CPU for SMALL, and the frozen CPU subnet is exact."""
    ids = torch.randint(0, SMALL.vocab_size, (1, 16))
    with torch.device("meta"):
        on_meta = fxrazor.convert(Llama(SMALL), ids, split_dims=split_dims)
    torch.manual_seed(0)
    cpu_model = Llama(SMALL).eval()
    on_cpu = fxrazor.convert(cpu_model, ids, split_dims=split_dims)
    _half(on_cpu)
    frozen = fxrazor.freeze(on_cpu)
    with torch.no_grad():
        exact = torch.allclose(frozen(ids), on_cpu(ids), rtol=1e-5, atol=1e-5)
    return _layout(on_meta) == _layout(on_cpu) and exact


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["outer", "largest"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    print(f"torch {torch.__version__} | Llama-2-7B shape on meta, ids 1x16 | goals: convert "
          f"<= {GOAL_SECONDS:.0f} s, peak RSS <= {GOAL_MB:.0f} MB")
    rows, ok = [], True
    for mode in ("outer", "largest"):
        r = _run_child(mode)
        ok &= r["shapes_ok"]
        rows.append([mode, r["convert_s"], r["import_mb"], r["peak_mb"], r["units"],
                     r["freeze_s"], "ok" if r["shapes_ok"] else f"WRONG {r['shapes']}"])
    print_table(["split_dims", "convert s", "RSS after imports MB", "peak RSS MB", "units",
                 "freeze (half) s", "half-width shapes"], rows)
    small = [[mode, small_meta_matches_cpu(mode)] for mode in ("outer", "largest")]
    ok &= all(same for _, same in small)
    print_table(["split_dims", "2-layer hidden-256: meta units == CPU units, frozen exact"], small)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
