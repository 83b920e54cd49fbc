"""Fuzz report: run the compiler checks of ``tests/helpers/fuzz_checks.py`` on many random
networks.

Network ``i`` is drawn from ``random.Random(i)`` by ``tests/helpers/fuzz_models.random_spec``
and its subnet is sampled with choice seed ``i``, so every case is reproducible from its index.
Prints the failure count per kind (convert error, full-width mismatch, frozen mismatch,
oracle mismatch, script error, ...) and writes the first failing spec of each kind, with
its error and a replay line, to a JSON file. Always exits 0: it is a report, not a gate.

Run: ``python benchmarks/fuzz.py [--n 5000] [--out fuzz_failures.json] [--start 0]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import random
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from common import print_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "helpers"))
import fuzz_models  # noqa: E402
from fuzz_checks import FAILURE_KINDS, FuzzFailure, check_network, replay_line  # noqa: E402
from fuzz_models import ENABLED_OPS, RandomChooser, build_network, random_spec  # noqa: E402

__all__ = ["main", "run"]

# Pattern flags that are off because of a library bug (read when specs are drawn).
_BUG_FLAGS = [name for name in vars(fuzz_models)
              if name.startswith("ENABLE_") and getattr(fuzz_models, name) is False]


def run(n: int, start: int = 0, units: tuple[str, ...] = ("sequential",),
        progress_every: int = 500) -> dict:
    """Check networks ``start .. start+n-1``; return counts, first failures and timing.

    Network ``i`` is converted with unit type ``units[i % len(units)]``.
    """
    counts: Counter[str] = Counter()
    first: dict[str, dict] = {}
    pruned = n_units = 0
    began = time.perf_counter()
    for i in range(start, start + n):
        spec = random_spec(RandomChooser(random.Random(i)))
        model, x, has_norm = build_network(spec)
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # fx prints failing code there
                stats = check_network(model, x, has_norm, i, unit=units[i % len(units)])
        except FuzzFailure as e:
            counts[e.kind] += 1
            first.setdefault(e.kind, {"index": i, "unit": units[i % len(units)],
                                      "choice_seed": i, "error": e.detail[:4000],
                                      "replay": replay_line(spec, i, units[i % len(units)]),
                                      "spec": spec})
        else:
            counts["passed"] += 1
            pruned += stats["pruned"]
            n_units += stats["units"]
        if progress_every and (i - start + 1) % progress_every == 0:
            print(f"  {i - start + 1}/{n} in {time.perf_counter() - began:.0f} s", flush=True)
    seconds = time.perf_counter() - began
    return {"n": n, "start": start, "seconds": seconds, "counts": dict(counts),
            "first_failures": first, "passed_with_pruning": pruned,
            "mean_units_when_passed": n_units / max(1, counts["passed"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="networks to check")
    parser.add_argument("--start", type=int, default=0, help="index of the first network")
    parser.add_argument("--out", default="fuzz_failures.json", help="first failure per kind")
    parser.add_argument("--units", default="sequential,l1",
                        help="comma-separated unit types, used in turn")
    parser.add_argument("--enable", action="append", default=[],
                        choices=_BUG_FLAGS, help="switch on a pattern disabled for a known "
                        "library bug, to count its failures (repeatable)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    for flag in args.enable:
        setattr(fuzz_models, flag, True)
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)  # the library logs every unknown op it pins
    print(f"torch {torch.__version__}; ops {', '.join(ENABLED_OPS)}; {args.n} networks; units {args.units}"
          + (f"; enabled {', '.join(args.enable)}" if args.enable else ""))
    report = run(args.n, args.start, tuple(args.units.split(",")))
    rows = [[kind, report["counts"].get(kind, 0),
             report["first_failures"].get(kind, {}).get("index", "")]
            for kind in ("passed", *FAILURE_KINDS)]
    print_table(["outcome", "count", "first index"], rows)
    print(f"{report['seconds']:.1f} s, {report['seconds'] / args.n * 1e3:.0f} ms per network; "
          f"{report['passed_with_pruning']} passing subnets pruned some channel; "
          f"{report['mean_units_when_passed']:.1f} mutable units on average")
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
