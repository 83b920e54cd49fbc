"""How long ``fxrazor.freeze`` takes on a resnet50 supernet at a random subnet.

Model: torchvision ``resnet50(weights=None)``, eval, converted once with
``fxrazor.convert`` (example input 1x3x224x224, CPU). Each repeat applies a new
``sample_choices()`` (not timed) and times ``fxrazor.freeze(supernet)``, which includes
``Supernet.sync`` (pushing the masks into the dynamic ops), slicing and copying every
weight into static modules, and recompiling the graph. Median of ``--repeats``.
Goal: < 1 s. The last frozen model's output is checked against the supernet's
(exit 1 if they differ); the timing never fails the run.

Run: ``python benchmarks/bench_freeze.py [--repeats 7] [--threads 1]``
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import torchvision
from common import frozen_matches, make_parser, print_table, setup_torch

import fxrazor

__all__ = ["main"]


def main() -> int:
    args = make_parser(__doc__.splitlines()[0], repeats=7).parse_args()
    setup_torch(args.threads)
    model = torchvision.models.resnet50(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    sn = fxrazor.convert(model, x).eval()
    for _ in range(args.warmup):
        fxrazor.freeze(sn)
    samples = []
    for _ in range(args.repeats):
        sn.set_choices(sn.sample_choices())
        start = time.perf_counter()
        frozen = fxrazor.freeze(sn)
        samples.append(time.perf_counter() - start)
    n_params = sum(p.numel() for p in frozen.parameters())
    full = sum(p.numel() for p in model.parameters())
    median = statistics.median(samples)
    print(f"resnet50 supernet, {len(sn.units)} units, random subnet each repeat")
    print_table(["what", "median ms", "min ms", "max ms", "params kept"],
                [["fxrazor.freeze", median * 1e3, min(samples) * 1e3, max(samples) * 1e3,
                  f"{n_params / full:.0%}"]])
    print(f"freeze median {median:.3f} s (goal < 1 s): {'met' if median < 1 else 'NOT met'}")
    return 0 if frozen_matches(frozen, sn, x) else 1


if __name__ == "__main__":
    sys.exit(main())
