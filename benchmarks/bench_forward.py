"""Forward speed of fxrazor supernets and frozen subnets against the original model.

Models: torchvision ``resnet50`` and ``mobilenet_v2`` (weights=None, eval), input
8x3x224x224, CPU, ``torch.no_grad``. Each pair is timed interleaved (original, other,
original, other, ...), median of ``--repeats`` after ``--warmup`` runs per side.

1. Full-width supernet (every unit at its maximum) vs the original: the cost of the dynamic
   ops and of ``Supernet.sync`` per call. Goal: ratio supernet / original <= 1.05.
   The outputs are checked to be equal first. ``torch.fx.symbolic_trace(model)`` is timed
   in the same rounds as a reference: any fx GraphModule pays for turning in-place ops
   such as ``out += identity`` into out-of-place ones, which is not fxrazor's own cost.
2. ``fxrazor.freeze`` of the subnet with every unit at half its channels vs the original:
   the speed-up that pruning buys (no goal; reported). The frozen output is checked
   against the supernet's at that choice.

Exits 1 if an output check fails; timings never fail the run.

Run: ``python benchmarks/bench_forward.py [--repeats 10] [--threads 1] [--skip-half]``
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import torch
import torchvision
from common import half_width_choices, interleaved_medians, make_parser, print_table, setup_torch

import fxrazor

__all__ = ["main"]

MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "resnet50": lambda: torchvision.models.resnet50(weights=None),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(weights=None),
}


def _same(name: str, got: torch.Tensor, want: torch.Tensor) -> bool:
    try:
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    except AssertionError as e:
        print(f"ERROR: {name}: outputs differ: {e}")
        return False
    return True


def _compare(x: torch.Tensor, repeats: int, warmup: int,
             **models: torch.nn.Module) -> list[float]:
    """Median seconds per forward of each model, interleaved."""
    fns: dict[str, Callable[[], object]] = {
        name: functools.partial(m, x) for name, m in models.items()
    }
    with torch.no_grad():
        return list(interleaved_medians(fns, repeats, warmup).values())


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0], repeats=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--skip-half", action="store_true", help="skip the frozen 0.5 part")
    args = parser.parse_args()
    setup_torch(args.threads)
    x = torch.randn(args.batch, 3, 224, 224)
    full_rows, half_rows, ok = [], [], True
    for name, make in MODELS.items():
        model = make().eval()
        sn = fxrazor.convert(model, x[:1]).eval()
        with torch.no_grad():
            ok &= _same(f"{name} full-width supernet", sn(x), model(x))
        fx_ref = torch.fx.symbolic_trace(model)
        orig, ref, dyn = _compare(x, args.repeats, args.warmup, model=model, fx=fx_ref, sn=sn)
        full_rows.append([name, orig * 1e3, ref / orig, dyn * 1e3, (dyn - orig) * 1e3,
                          dyn / orig, dyn / ref])
        if args.skip_half:
            continue
        sn.set_choices(half_width_choices(sn))
        frozen = fxrazor.freeze(sn).eval()
        with torch.no_grad():
            ok &= _same(f"{name} frozen half-width", frozen(x), sn(x))
        orig, half = _compare(x, args.repeats, args.warmup, model=model, frozen=frozen)
        half_rows.append([name, orig * 1e3, half * 1e3, orig / half])
    print(f"full-width supernet vs original, batch {args.batch}, median of {args.repeats} "
          "(interleaved); goal ratio <= 1.05")
    print_table(["model", "original ms", "plain fx / original", "supernet ms", "overhead ms",
                 "supernet / original", "supernet / plain fx"], full_rows)
    if half_rows:
        print(f"frozen subnet, every unit at half width, vs original, batch {args.batch}")
        print_table(["model", "original ms", "frozen 0.5 ms", "speed-up"], half_rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
