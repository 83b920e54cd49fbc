"""Shared helpers for the fxrazor benchmarks: CLI options, interleaved timing, tables.

Not a benchmark itself; the ``bench_*.py`` scripts next to it import it. Every timing is
the median of several repeats taken after warm-up runs. When two or more callables are
compared they are timed interleaved (A, B, A, B, ...) so that slow drift of a noisy
machine (frequency scaling, other processes) affects both sides alike.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tabulate import tabulate

__all__ = [
    "frozen_matches",
    "make_parser",
    "setup_torch",
    "interleaved_medians",
    "median_time",
    "print_table",
    "half_width_choices",
]


def make_parser(description: str, repeats: int, warmup: int = 1) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=repeats, help="timed runs per side")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed runs per side")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    return parser


def setup_torch(threads: int) -> None:
    """Fix the thread count and seed, and print what the numbers were measured on."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__} | python {platform.python_version()} | "
        f"{platform.machine()} | torch threads {torch.get_num_threads()}"
    )


def _timed(fn: Callable[[], Any]) -> float:
    gc.collect()  # keep collection of earlier garbage out of the measured interval
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_medians(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median seconds per call of each callable, timed in round-robin order.

    The order is reversed every other round (A, B, B, A, ...) so that no callable always
    runs first, right after the garbage collection and the previous round.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns.items())
    for i in range(repeats):
        for name, fn in order if i % 2 == 0 else reversed(order):
            samples[name].append(_timed(fn))
    return {name: statistics.median(s) for name, s in samples.items()}


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median seconds per call of ``fn``."""
    return interleaved_medians({"fn": fn}, repeats, warmup)["fn"]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print ``rows`` as a GitHub-style table with 3-digit floats."""
    print(tabulate(rows, headers=list(headers), tablefmt="github", floatfmt=".3f"))
    print()


def half_width_choices(supernet: Any, names: Sequence[str] | None = None) -> dict[str, int]:
    """``{unit: num_channels // 2}`` for the named units (default: every mutable unit)."""
    units = {u.name: u for u in supernet.units}
    chosen = names if names is not None else list(units)
    return {name: max(1, units[name].num_channels // 2) for name in chosen}


def frozen_matches(frozen: Any, supernet: Any, x: torch.Tensor) -> bool:
    """Whether the frozen subnet's output equals the supernet's; prints the mismatch if not."""
    with torch.no_grad():
        try:
            torch.testing.assert_close(frozen(x), supernet(x), rtol=1e-4, atol=1e-4)
        except AssertionError as e:
            print(f"ERROR: frozen output differs from the supernet's: {e}")
            return False
    return True
