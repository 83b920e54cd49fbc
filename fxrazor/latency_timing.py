"""Timers for :mod:`fxrazor.latency`: the milliseconds one forward of a module takes on
this machine, in torch eager or in ONNX Runtime (when installed).

A timer is any callable ``(module, args) -> milliseconds``; the latency table takes one,
so tests and other runtimes can bring their own.

Example:
    >>> import torch
    >>> from torch import nn
    >>> ms = TorchTimer(repeats=1, warmup=0)(nn.Linear(4, 4), (torch.randn(1, 4),))
    >>> ms > 0
    True
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from fxrazor.errors import InvalidArgumentError

__all__ = ["Timer", "TorchTimer", "OrtTimer", "BACKENDS", "make_timer", "machine_info"]

logger = logging.getLogger(__name__)

#: ``(module, args) -> milliseconds`` of one forward.
Timer = Callable[[nn.Module, tuple[Any, ...]], float]

#: The backends :func:`make_timer` knows.
BACKENDS = ("torch", "onnxruntime")

# A sample shorter than this is noise-dominated on a shared machine: fast layers are
# called in a loop until one sample lasts about this long.
_MIN_SAMPLE_S = 2e-3


def _median_ms(call: Callable[[], Any], repeats: int, warmup: int) -> float:
    """Median milliseconds of ``call`` over ``repeats`` samples, after ``warmup`` calls."""
    for _ in range(warmup):
        call()
    start = time.perf_counter()
    call()
    once = time.perf_counter() - start
    inner = max(1, int(_MIN_SAMPLE_S / max(once, 1e-9)))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            call()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples) * 1e3


class TorchTimer:
    """Torch eager on the CPU (under ``torch.no_grad``, module in eval mode), at the
    thread count torch has now (``torch.set_num_threads``).

    Args:
        repeats: timed samples; the median is kept.
        warmup: untimed forwards first.
    """

    name = "torch"

    def __init__(self, repeats: int = 5, warmup: int = 1) -> None:
        self.repeats, self.warmup = _check_counts(repeats, warmup)

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> float:
        module.eval()
        with torch.no_grad():
            return _median_ms(lambda: module(*args), self.repeats, self.warmup)


class OrtTimer:
    """ONNX Runtime on the CPU, one intra-op and one inter-op thread: the module is exported
    in memory (TorchScript exporter: quick for one layer) and its session timed.

    Args:
        repeats: timed samples; the median is kept.
        warmup: untimed runs first.
        threads: ONNX Runtime's intra-op threads.
    """

    name = "onnxruntime"

    def __init__(self, repeats: int = 5, warmup: int = 1, threads: int = 1) -> None:
        self.repeats, self.warmup = _check_counts(repeats, warmup)
        self.threads = threads
        self.ort = _import_onnxruntime()

    def session(self, module: nn.Module, args: tuple[Any, ...]) -> Any:
        """An inference session of ``module`` exported on ``args``."""
        buffer = io.BytesIO()
        module.eval()
        with warnings.catch_warnings(), torch.no_grad():
            # the legacy exporter warns that it is legacy; it exports one layer in ms
            warnings.simplefilter("ignore")
            # (typed for paths; the exporter writes to any binary file object)
            torch.onnx.export(module, args, cast(Any, buffer), dynamo=False,
                              input_names=[f"x{i}" for i in range(len(args))])
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: no per-session notices
        return self.ort.InferenceSession(buffer.getvalue(), options,
                                         providers=["CPUExecutionProvider"])

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> float:
        session = self.session(module, args)
        feed = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args, strict=True)}
        return _median_ms(lambda: session.run(None, feed), self.repeats, self.warmup)


def _check_counts(repeats: int, warmup: int) -> tuple[int, int]:
    if not isinstance(repeats, int) or repeats < 1 or not isinstance(warmup, int) \
            or warmup < 0:
        raise InvalidArgumentError(f"repeats must be a positive int and warmup a "
                                   f"non-negative one, got {repeats!r}, {warmup!r}")
    return repeats, warmup


def _import_onnxruntime() -> Any:
    if importlib.util.find_spec("onnxruntime") is None or \
            importlib.util.find_spec("onnx") is None:
        raise InvalidArgumentError(
            "backend 'onnxruntime' needs the onnxruntime and onnx packages, which are not "
            "installed: `pip install onnxruntime onnx`, or use backend='torch'")
    return importlib.import_module("onnxruntime")  # untyped: an Any


def make_timer(backend: str, repeats: int = 5, warmup: int = 1) -> Timer:
    """The timer of ``backend`` (one of :data:`BACKENDS`).

    Raises:
        InvalidArgumentError: an unknown backend, or onnxruntime asked for but missing.
    """
    if backend == "torch":
        return TorchTimer(repeats, warmup)
    if backend == "onnxruntime":
        return OrtTimer(repeats, warmup)
    raise InvalidArgumentError(f"unknown latency backend {backend!r}; one of {list(BACKENDS)}")


def machine_info(backend: str) -> dict[str, Any]:
    """What a table's numbers depend on: versions, threads, the processor."""
    import os
    import platform

    info: dict[str, Any] = {"backend": backend, "torch": torch.__version__,
                            "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                            "python": platform.python_version(),
                            "machine": platform.machine(), "processor": platform.processor()}
    if backend == "onnxruntime" and importlib.util.find_spec("onnxruntime") is not None:
        info["onnxruntime"] = importlib.import_module("onnxruntime").__version__
    return info
