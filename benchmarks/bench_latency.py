"""How well a per-layer latency table (``fxrazor.latency.LatencyTable``) ranks random
subnets by their measured latency, and what it costs.

Model: torchvision ``resnet18(weights=None)`` (``--models`` for others, e.g.
``mobilenet_v2``), eval, converted with ``fxrazor.convert`` at 1x3x224x224 (CPU). Per
backend (torch eager; ONNX Runtime when installed, one thread): the table is measured on
this machine (timed: "build s"), ``--subnets`` random subnets are drawn with a fixed seed
(``sample_choices()``), each is predicted (``predict_many``; per candidate, choices seen
once before: "predict us") and then frozen and timed whole with the same backend (torch
eager forwards; ONNX Runtime: the frozen subnet exported, its session run): all subnets
in turn, ``--repeats`` rounds after ``--warmup``, the median per subnet, so that a shared
machine's drift hits every subnet alike. Reported: Spearman's rank correlation of predicted and
measured latency, the mean absolute percentage error, and the measured range; with
``--remeasure`` the subnets are timed a second time and "again" is the rank correlation of
the two measurements: the most any predictor can reach on this machine at that moment.

Checks (exit 1 if one fails; timings never fail the run): the table predicts the full-width
subnet as its own measured total, ``predict_many`` equals ``predict`` one by one, and a
JSON round trip of the table predicts the same numbers.

Run: ``python benchmarks/bench_latency.py [--models resnet18 mobilenet_v2] [--subnets 50]
[--backends torch onnxruntime] [--repeats 5] [--threads 1] [--remeasure]``
"""

from __future__ import annotations

import functools
import importlib.util
import math
import random
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torchvision
from common import interleaved_medians, make_parser, print_table, setup_torch

import fxrazor
from fxrazor.latency import DEFAULT_GRID, LatencyTable
from fxrazor.latency_timing import OrtTimer

__all__ = ["main", "spearman"]


def _ranks(values: list[float]) -> list[float]:
    """Ranks from 1, ties given their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation: Pearson's of the ranks."""
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    var = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return cov / var if var else float("nan")


def _checks(table: LatencyTable, sn: fxrazor.Supernet, subnets: list[dict]) -> bool:
    ok = True
    full = table.predict(sn, sn.sample_choices("max"))
    if not math.isclose(full, table.measured_ms[1], rel_tol=1e-9, abs_tol=1e-9):
        print(f"ERROR: full width predicted {full} ms, measured total {table.measured_ms[1]}")
        ok = False
    many = table.predict_many(sn, subnets)
    if many != [table.predict(sn, c) for c in subnets]:
        print("ERROR: predict_many differs from predict one by one")
        ok = False
    again = LatencyTable.from_dict(table.to_dict())
    if again.predict_many(sn, subnets) != many:
        print("ERROR: the table read back from JSON predicts other numbers")
        ok = False
    return ok


def _measure_subnets(sn: fxrazor.Supernet, backend: str, subnets: list[dict], repeats: int,
                     warmup: int) -> list[float]:
    """Milliseconds of each frozen subnet: one forward (or session run) of each in turn,
    ``repeats`` rounds, the median per subnet, so that the machine's drift hits all alike."""
    before = sn.choices()
    calls: dict[str, Callable[[], object]] = {}
    args = tuple(sn.example_args)
    try:
        for i, choices in enumerate(subnets):
            sn.set_choices(choices)
            frozen = fxrazor.freeze(sn).eval()
            if backend == "onnxruntime":
                session = OrtTimer().session(frozen, args)
                feed = {x.name: a.numpy() for x, a in zip(session.get_inputs(), args,
                                                          strict=True)}
                calls[str(i)] = functools.partial(session.run, None, feed)
            else:
                calls[str(i)] = functools.partial(_no_grad_call, frozen, args)
    finally:
        sn.set_choices(before)
    seconds = interleaved_medians(calls, repeats, warmup)
    return [seconds[str(i)] * 1e3 for i in range(len(subnets))]


def _no_grad_call(module: torch.nn.Module, args: tuple) -> object:
    with torch.no_grad():
        return module(*args)


def run_backend(sn: fxrazor.Supernet, backend: str, subnets: list[dict], repeats: int,
                warmup: int, remeasure: bool = False) -> tuple[list, bool]:
    """One row of the results table, and whether the checks passed."""
    start = time.perf_counter()
    table = LatencyTable.measure(sn, backend=backend, grid=DEFAULT_GRID, repeats=repeats,
                                 warmup=warmup)
    build_s = time.perf_counter() - start
    table.predict_many(sn, subnets)  # first sight of each width: read off the unit masks
    start = time.perf_counter()
    predicted = table.predict_many(sn, subnets)
    predict_us = (time.perf_counter() - start) / len(subnets) * 1e6
    measured = _measure_subnets(sn, backend, subnets, repeats, warmup)
    # the noise ceiling: how well one measurement ranks a second one
    again = _measure_subnets(sn, backend, subnets, repeats, warmup) if remeasure else None
    rho = spearman(predicted, measured)
    mape = statistics.fmean(abs(p - m) / m for p, m in zip(predicted, measured, strict=True))
    ok = _checks(table, sn, subnets)
    ceiling = spearman(measured, again) if again is not None else float("nan")
    return [backend, len(table.layers), build_s, predict_us, rho, ceiling, mape * 100,
            min(measured), max(measured), table.measured_ms[1]], ok


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--models", nargs="+", default=["resnet18"],
                        help="torchvision model names")
    parser.add_argument("--subnets", type=int, default=50, help="random subnets per model")
    parser.add_argument("--backends", nargs="+", default=None,
                        help="torch and/or onnxruntime (default: both where installed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subnet draws")
    parser.add_argument("--remeasure", action="store_true",
                        help="time the subnets twice: the rank correlation of the two "
                             "measurements is the noise ceiling ('again')")
    args = parser.parse_args()
    setup_torch(args.threads)
    backends = args.backends or ["torch"] + (
        ["onnxruntime"] if importlib.util.find_spec("onnxruntime") else [])
    if "onnxruntime" not in backends and args.backends is None:
        print("onnxruntime is not installed: torch eager only")
    rows, ok = [], True
    for name in args.models:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval()
        sn = fxrazor.convert(model, torch.randn(1, 3, 224, 224)).eval()
        random.seed(args.seed)
        subnets = [sn.sample_choices() for _ in range(args.subnets)]
        for backend in backends:
            row, passed = run_backend(sn, backend, subnets, args.repeats, args.warmup,
                                      args.remeasure)
            rows.append([name, *row])
            ok &= passed
    print(f"{args.subnets} random subnets per model (seed {args.seed}), grid {DEFAULT_GRID}, "
          f"1x3x224x224")
    print_table(["model", "backend", "layers", "build s", "predict us", "spearman",
                 "again", "MAPE %", "min ms", "max ms", "full ms"], rows)
    print(f"checks passed: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
