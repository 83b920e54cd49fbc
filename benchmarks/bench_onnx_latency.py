"""ONNX Runtime CPU latency of a dense model vs its subnet at half width, aligned to 8.

For each model (resnet50 and mobilenet_v2 by default, torchvision, weights=None) three
variants are saved with ``fxrazor.save(..., format="onnx")`` and timed in ONNX Runtime
(CPU provider, ``--threads`` intra-op threads, batch 1 at 224x224):

- ``dense``: the model at full width (convert, freeze at full width: the graph ONNX sees
  is the original's);
- ``half``: every unit at ratio 0.5, rounded to a multiple of 8 channels (the unit's
  ``divisor``; ``make_divisible`` keeps at least 90% of the asked width), so that the kept
  widths suit vectorised kernels;
- ``flops50``: ``sn.prune({"flops": 0.5}, importance="l1", round_to=8)``: the L1 criterion
  picks the channels and the widths to half the FLOPs (widths differ per unit).

Each ONNX model's outputs are checked against the frozen PyTorch model (exit 1 when they
differ); the three sessions are timed interleaved (medians), and the speed-up is the dense
median over the variant's. FLOPs are FlopCounterMode's count per sample (batch 1).

Example:
    python benchmarks/bench_onnx_latency.py                   # ~2 min on 2 cores
    python benchmarks/bench_onnx_latency.py --models resnet50 --threads 2
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import interleaved_medians, make_parser, print_table, setup_torch
from torch.utils.flop_counter import FlopCounterMode

import fxrazor


def _flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return int(counter.get_total_flops())


def _variants(name: str, x: torch.Tensor) -> dict[str, torch.nn.Module]:
    import torchvision

    model = torchvision.models.get_model(name, weights=None).eval()
    aligned = fxrazor.convert(model, x, unit_args={"choice_mode": "ratio", "divisor": 8})
    dense = fxrazor.freeze(aligned).eval()
    aligned.set_choices({u.name: 0.5 for u in aligned.units})
    half = fxrazor.freeze(aligned).eval()
    by_l1 = fxrazor.convert(model, x, unit="l1")
    by_l1.prune({"flops": 0.5}, importance="l1", round_to=8)
    return {"dense": dense, "half": half, "flops50": fxrazor.freeze(by_l1).eval()}


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _bench_model(name: str, args: Any, folder: Path) -> tuple[list[list[Any]], bool]:
    x = torch.randn(1, 3, 224, 224)
    feed = x.numpy()
    rows: list[list[Any]] = []
    ok = True
    runs = {}
    base_flops = 0
    for label, module in _variants(name, x).items():
        path = fxrazor.save(module, folder / f"{name}-{label}.onnx", example_inputs=x)
        session = _session(path, args.threads)
        input_name = session.get_inputs()[0].name
        with torch.no_grad():
            want = module(x).numpy()
        got = session.run(None, {input_name: feed})[0]
        scale = float(np.abs(want).max()) or 1.0
        same = bool(np.abs(got - want).max() <= 1e-4 * max(scale, 1.0))
        ok &= same
        flops = _flops(module, x)
        base_flops = base_flops or flops
        params = sum(p.numel() for p in module.parameters())
        runs[label] = (lambda s=session, n=input_name: s.run(None, {n: feed}))
        rows.append([name, label, f"{params / 1e6:.2f}", f"{flops / 1e9:.2f}",
                     f"{flops / base_flops:.3f}", "yes" if same else "NO"])
    times = interleaved_medians(runs, args.repeats, args.warmup)
    for row, label in zip(rows, runs, strict=True):
        row += [f"{times[label] * 1e3:.1f}", f"{times['dense'] / times[label]:.2f}"]
    return rows, ok


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0], repeats=30, warmup=3)
    parser.add_argument("--models", nargs="*", default=["resnet50", "mobilenet_v2"])
    args = parser.parse_args()
    setup_torch(args.threads)
    try:
        import onnxruntime
    except ImportError:
        print("needs onnxruntime (pip install 'fxrazor[onnx]')", file=sys.stderr)
        return 2
    print(f"onnxruntime {onnxruntime.__version__} | ORT intra-op threads {args.threads}")
    rows: list[list[Any]] = []
    ok = True
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            model_rows, model_ok = _bench_model(name, args, Path(folder))
            rows += model_rows
            ok &= model_ok
    print_table(["model", "variant", "params M", "GFLOPs/sample", "FLOPs ratio",
                 "ORT == frozen", "ORT ms (median)", "speed-up vs dense"], rows)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
