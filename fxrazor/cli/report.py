"""What the command line measures and prints: params and FLOPs per sample, whether the
frozen model computes what the supernet computes, and forward times.

Exactness is only worth printing where it could fail: a model whose output is constant
(ViT's zero-initialised head, outputs of ~1e-12) matches any subnet, so the check then runs
on a copy of the supernet whose weights and BatchNorm statistics were randomised (seeded),
frozen at the same choices, and says so; or says that it could not be checked.

Example:
    >>> print(size_line(Resources(25_557_032, 8_178_000_000), batch=1, input_label="3x224x224"))
    params: 25.56 M
    FLOPs per sample (batch 1, input 3x224x224): 8.178 G; multiply-adds 4.089 G
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import torch
from torch import nn

from fxrazor.api import freeze
from fxrazor.errors import UnsupportedModelError
from fxrazor.estimate import estimate
from fxrazor.summary import measure
from fxrazor.supernet import Supernet
from fxrazor.verify.equivalence import DEFAULT_RTOL, output_error, output_scale, within

__all__ = ["Steps", "Resources", "resources", "size_line", "Exactness", "check_exact",
           "median_times", "call"]

_CONSTANT = 1e-6  # an output spread below this fraction of its scale (or scale) is constant


class Steps:
    """Progress of the long steps on stderr, silent when ``quiet``; each step's seconds are
    kept for the report.

    On a terminal a step shows ``fxrazor: convert ...`` while it runs, completed in place
    with its time; elsewhere (a log, a pipe) only finished steps are written, so that an
    error stays the one line it is (a step that fails leaves no line of its own).
    """

    def __init__(self, quiet: bool, stream: TextIO | None = None) -> None:
        self.quiet = quiet
        self.stream = stream
        self.seconds: dict[str, float] = {}

    def _out(self) -> TextIO:
        return self.stream or sys.stderr

    @contextmanager
    def step(self, name: str, what: str = "") -> Iterator[None]:
        """Time ``name`` (``what`` says more in the progress line)."""
        out = self._out()
        live = not self.quiet and out.isatty()
        label = f"fxrazor: {name}{' ' + what if what else ''}"
        if live:
            print(f"{label} ...", end="", file=out, flush=True)
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            if live:
                print("\r\033[K", end="", file=out, flush=True)  # the error takes the line
            raise
        self.seconds[name] = time.perf_counter() - start
        if not self.quiet:
            print(f"{chr(13) if live else ''}{label} done in {self.seconds[name]:.2f} s",
                  file=out, flush=True)

    def line(self) -> str:
        """``convert 1.12 s, freeze 0.55 s``: every step taken."""
        return ", ".join(f"{k} {v:.2f} s" for k, v in self.seconds.items())


@dataclass(frozen=True)
class Resources:
    """Parameters and FLOPs (``FlopCounterMode``'s count: 2 per multiply-add) of one
    forward on the example inputs."""

    params: int
    flops: int


def resources(sn: Supernet, frozen: nn.Module | None = None) -> Resources:
    """The supernet's current subnet, estimated from the graph; where the estimate does
    not model a layer, the subnet is frozen (or ``frozen`` taken) and counted."""
    try:
        found = estimate(sn)
        return Resources(int(found["params"]), int(found["flops"]))
    except UnsupportedModelError:
        params, flops = measure(frozen if frozen is not None else freeze(sn), sn.example_args)
        return Resources(params, flops)


def _m(value: float) -> str:
    return f"{value / 1e6:.4g} M"


def _g(value: float) -> str:
    return f"{value / 1e9:.4g} G"


def size_line(before: Resources, after: Resources | None = None, *, batch: int,
              input_label: str) -> str:
    """Params, and FLOPs per sample, labelled with their units (and the ratio after/before
    where ``after`` is given)."""
    per = 1 if batch <= 0 else batch
    how = f"batch 1, input {input_label}" if per == 1 else \
        f"counted at batch {per} and divided by {per}, input {input_label}"

    def pair(a: float, b: float | None, unit: Any) -> str:
        if b is None:
            return unit(a)
        ratio = f"{b / a:.3f}x" if a else "-"
        return f"{unit(a)} -> {unit(b)} ({ratio})"

    flops_a = before.flops / per
    flops_b = None if after is None else after.flops / per
    macs = _g(flops_a / 2) if flops_b is None else f"{_g(flops_a / 2)} -> {_g(flops_b / 2)}"
    return (f"params: {pair(before.params, None if after is None else after.params, _m)}\n"
            f"FLOPs per sample ({how}): {pair(flops_a, flops_b, _g)}; multiply-adds {macs}")


def call(module: nn.Module, inputs: Any) -> Any:
    """``module`` on inputs as ``convert`` takes them (tensor, tuple or keyword dict)."""
    with torch.no_grad():
        if isinstance(inputs, Mapping):
            return module(**inputs)
        return module(*inputs) if isinstance(inputs, tuple) else module(inputs)


def _leaves(out: Any) -> list[torch.Tensor]:
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in _leaves(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _leaves(v)]
    return [out] if isinstance(out, torch.Tensor) and out.is_floating_point() and \
        out.numel() else []


def _constant(out: Any) -> bool:
    """Whether every float tensor of ``out`` is (near) zero or holds one value."""
    leaves = [t.detach().double() for t in _leaves(out)]
    scale = max((float(t.abs().max()) for t in leaves), default=0.0)
    spread = max((float(t.max() - t.min()) for t in leaves), default=0.0)
    return scale < _CONSTANT or spread <= _CONSTANT * scale


def _randomise(module: nn.Module, seed: int) -> None:
    """Seeded noise on every float parameter (about half its mean magnitude, at least
    0.01: a zero-initialised head too) and non-trivial BatchNorm statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.is_floating_point() and p.numel():
                size = max(float(p.abs().mean()) * 0.5, 0.05)
                p.add_(torch.randn(p.shape, generator=gen).to(p) * size)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                assert m.running_var is not None  # tracked together with running_mean
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


@dataclass(frozen=True)
class Exactness:
    """Frozen subnet against the supernet at the same choices.

    Attributes:
        error: the largest absolute difference of their outputs.
        scale: the largest absolute output of the supernet.
        randomised: measured on a copy with randomised weights (the model's own output
            was constant).
        checked: False where even that output was constant: nothing could be told.
    """

    error: float
    scale: float
    randomised: bool = False
    checked: bool = True
    rtol: float = field(default=DEFAULT_RTOL)

    @property
    def passed(self) -> bool:
        """Checked and within ``rtol`` of the output scale (or of 1 for small outputs);
        a check that could not be made does not fail."""
        return not self.checked or within(self.error, self.scale, self.rtol)

    def line(self) -> str:
        if not self.checked:
            return ("frozen == supernet: not checked: the output is constant even with "
                    "randomised weights, so no difference could show")
        how = " (on a copy with randomised weights: the model's own output is constant)" \
            if self.randomised else ""
        verdict = f"within {self.rtol:.0e} of the scale" if self.passed else \
            f"MORE than {self.rtol:.0e} of the scale"
        sign = "==" if self.passed else "!="
        return (f"frozen {sign} supernet{how}: max |diff| {self.error:.1e} "
                f"(output scale {self.scale:.1e}), {verdict}")


def check_exact(sn: Supernet, frozen: nn.Module, inputs: Any, seed: int = 0) -> Exactness:
    """Compare ``frozen`` with ``sn`` on ``inputs``; a constant output is checked again on
    a randomised copy of ``sn`` frozen at the same choices (``sn`` is not changed)."""
    expected = call(sn, inputs)
    if not _constant(expected):
        return Exactness(output_error(call(frozen, inputs), expected), output_scale(expected))
    other = copy.deepcopy(sn)
    _randomise(other.graph_module, seed)
    expected = call(other, inputs)
    if _constant(expected):
        return Exactness(0.0, output_scale(expected), randomised=True, checked=False)
    error = output_error(call(freeze(other), inputs), expected)
    return Exactness(error, output_scale(expected), randomised=True)


def median_times(a: nn.Module, b: nn.Module, inputs: Any,
                 repeats: int) -> tuple[float, float]:
    """Median forward times of a and b, measured alternately so drift hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    call(a, inputs)  # warm-up: first calls allocate and pick kernels
    call(b, inputs)
    for _ in range(repeats):
        for module, out in ((a, times[0]), (b, times[1])):
            start = time.perf_counter()
            call(module, inputs)
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])
