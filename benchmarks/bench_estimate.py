"""How much faster ``fxrazor.estimate`` gives a subnet's FLOPs and params than freezing it
and counting with ``FlopCounterMode``.

Model: torchvision ``resnet50(weights=None)``, eval, converted once with
``fxrazor.convert`` (example input 1x3x224x224, CPU). The same random candidates
(``sample_choices()``) go to both sides, timed in the same run, interleaved:
``fxrazor.estimate(sn, choices)`` (choices applied for the estimate only), and
``set_choices`` + ``fxrazor.freeze`` + one forward under ``FlopCounterMode`` + a parameter
count. ``estimate_many`` over all candidates is timed too (per candidate). The first
estimate builds the plan (timed apart, as "plan"). A unit's choice seen for the first time
is checked by its unit (as ``set_choices`` checks it, without applying it) and the plan
learns how many channels it keeps: "choices new" times a pass in which every choice is new
(the learnt counts are forgotten before it); afterwards a candidate needs only those
numbers ("choices seen", as in a search over a few widths per unit). Medians of ``--repeats``.
Goal: estimate ≥ 1000x faster per candidate. Every candidate's counts are checked equal
on both sides (exit 1 if not); the timing never fails the run.

Run: ``python benchmarks/bench_estimate.py [--repeats 5] [--candidates 200] [--threads 1]``
"""

from __future__ import annotations

import importlib
import itertools
import statistics
import sys
import time

import torch
import torchvision
from common import make_parser, print_table, setup_torch

import fxrazor
from fxrazor.summary import measure

estimate_module = importlib.import_module("fxrazor.estimate")  # (the face re-exports the function under the name)

__all__ = ["main"]


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--candidates", type=int, default=200,
                        help="random candidates for the estimate timings")
    args = parser.parse_args()
    setup_torch(args.threads)
    torch.manual_seed(0)
    sn = fxrazor.convert(torchvision.models.resnet50(weights=None).eval(),
                         torch.randn(1, 3, 224, 224)).eval()
    candidates = [sn.sample_choices() for _ in range(args.candidates)]
    start = time.perf_counter()
    fxrazor.estimate(sn)
    plan_s = time.perf_counter() - start

    def forget_widths() -> None:
        """Forget the kept-channel counts learnt from earlier candidates, so that every
        choice of the next pass is new (a private handle: only this benchmark needs it)."""
        widths = estimate_module._plan(sn)[1]
        if widths is not None:
            widths.kept_for.clear()

    def counted(choices: dict) -> dict[str, int]:
        sn.set_choices(choices)
        params, flops = measure(fxrazor.freeze(sn), sn.example_args)
        return {"flops": flops, "params": params}

    slow, first, fast, many, ok = [], [], [], [], True
    cycle = itertools.cycle(candidates)
    for _ in range(args.warmup):
        counted(candidates[0])
    for _ in range(args.repeats):
        choices = next(cycle)
        t0 = time.perf_counter()
        expected = counted(choices)
        forget_widths()
        t0b = time.perf_counter()
        got_first = [fxrazor.estimate(sn, c) for c in candidates]  # every choice new
        t1 = time.perf_counter()
        got = [fxrazor.estimate(sn, c) for c in candidates]
        t2 = time.perf_counter()
        got_many = fxrazor.estimate_many(sn, candidates)
        t3 = time.perf_counter()
        slow.append(t0b - t0)
        first.append((t1 - t0b) / len(candidates))
        fast.append((t2 - t1) / len(candidates))
        many.append((t3 - t2) / len(candidates))
        ok &= got[candidates.index(choices)] == expected and got_many == got == got_first
    slow_s, first_s, fast_s, many_s = (statistics.median(s) for s in (slow, first, fast, many))
    print(f"resnet50 supernet, {len(sn.units)} units, {len(candidates)} random candidates; "
          f"plan built once in {plan_s * 1e3:.1f} ms")
    print_table(["what", "median ms per candidate", "x faster than freeze+count"],
                [["freeze + FlopCounterMode", slow_s * 1e3, 1.0],
                 ["fxrazor.estimate, choices new", first_s * 1e3, slow_s / first_s],
                 ["fxrazor.estimate, choices seen", fast_s * 1e3, slow_s / fast_s],
                 ["fxrazor.estimate_many", many_s * 1e3, slow_s / many_s]])
    ratio = slow_s / fast_s
    print(f"estimate {ratio:.0f}x faster per candidate with choices seen before, "
          f"{slow_s / first_s:.0f}x with new ones (goal >= 1000x): "
          f"{'met' if ratio >= 1000 else 'NOT met'}; counts equal: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
