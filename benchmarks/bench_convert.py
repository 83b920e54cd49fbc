"""How long ``fxrazor.convert`` takes on torchvision resnet50, against Torch-Pruning.

Model: ``torchvision.models.resnet50(weights=None)`` in eval mode, example input
1x3x224x224, CPU. Compared in the same run, interleaved, median of ``--repeats``:

* ``fxrazor.convert(model, x)``: deep copy of the model, symbolic trace, shape propagation
  (one forward through an fx Interpreter), unit discovery, dynamic-op insertion and unit
  construction. The result is a ready supernet; the input model is not touched.
* ``torch_pruning.DependencyGraph().build_dependency(model, example_inputs=x)``: one forward
  with autograd recording on the model itself (no copy) and the dependency graph build.
  Skipped with a message when ``torch_pruning`` is not installed (it is not a dependency
  of fxrazor; ``pip install torch-pruning==1.6.1`` to compare).

Goal: fxrazor <= 0.5x Torch-Pruning's time. Then convert is broken into its passes
(``trace_model``, ``discover_units``, ``insert_dynamic_ops``), with a plain deep copy and a
plain forward as reference points for what tracing has to pay anyway.

Run: ``python benchmarks/bench_convert.py [--repeats 7] [--threads 1]``
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

import torch
import torchvision
from common import interleaved_medians, make_parser, print_table, setup_torch

import fxrazor
from fxrazor.layers import layer_table
from fxrazor.mutables.base import BaseMutable
from fxrazor.passes.discover_units import discover_units
from fxrazor.passes.insert_dynamic_ops import insert_dynamic_ops
from fxrazor.trace.tracer import trace_model

__all__ = ["main"]


def _tp_build(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], Any] | None:
    if importlib.util.find_spec("torch_pruning") is None:
        print("torch_pruning is not installed: skipping the Torch-Pruning comparison "
              "(pip install torch-pruning==1.6.1 to include it)\n")
        return None
    import torch_pruning as tp

    print(f"torch_pruning {tp.__version__}")
    return lambda: tp.DependencyGraph().build_dependency(model, example_inputs=x)


def _phase_times(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> list[list[Any]]:
    """Median time of each pass; every repeat runs the passes in order on a fresh trace.

    The passes get the layer records as ``convert`` gives them (``layer_table()``, built in
    the trace step as ``convert`` builds it before tracing): without them ``trace_model``
    knows no shape formulas and runs every node on meta, and the other passes would fall
    back to the library's defaults.
    """
    state: dict[str, Any] = {}

    def trace() -> None:
        state["layers"] = layers = layer_table()
        state["traced"] = trace_model(model, x, (BaseMutable,), layers=layers)

    def discover() -> None:
        state["analysis"] = discover_units(state["traced"], state["layers"])

    def insert() -> None:
        insert_dynamic_ops(state["traced"].graph_module, state["analysis"], state["layers"])

    with torch.no_grad():
        plain_forward = lambda: model(x)  # noqa: E731
        steps = {"deepcopy(model) [ref]": lambda: copy.deepcopy(model),
                 "plain forward, no_grad [ref]": plain_forward,
                 "trace_model (copy+trace+shape prop)": trace,
                 "discover_units": discover,
                 "insert_dynamic_ops": insert}
        medians = interleaved_medians(steps, repeats, warmup=1)
    passes = sum(v for k, v in medians.items() if "[ref]" not in k)
    return [[name, t * 1e3, "" if "[ref]" in name else f"{t / passes:.0%}"]
            for name, t in medians.items()]


def main() -> int:
    args = make_parser(__doc__.splitlines()[0], repeats=7).parse_args()
    setup_torch(args.threads)
    model = torchvision.models.resnet50(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    shared = copy.deepcopy(model)  # convert_ may change its model; keep the original intact
    fns: dict[str, Callable[[], Any]] = {
        "fxrazor.convert": lambda: fxrazor.convert(model, x),
        "fxrazor.convert_ (shares weights)": lambda: fxrazor.convert_(shared, x),
    }
    tp_fn = _tp_build(model, x)
    if tp_fn is not None:
        fns["torch_pruning build_dependency"] = tp_fn
    medians = interleaved_medians(fns, args.repeats, args.warmup)
    base = medians.get("torch_pruning build_dependency")
    rows = [[name, t * 1e3, f"{t / base:.2f}x" if base else "-"] for name, t in medians.items()]
    print(f"resnet50, 1x3x224x224, median of {args.repeats} (interleaved)")
    print_table(["what", "ms", "vs Torch-Pruning"], rows)
    if base:
        for name in ("fxrazor.convert", "fxrazor.convert_ (shares weights)"):
            ratio = medians[name] / base
            print(f"{name} / Torch-Pruning = {ratio:.2f} (goal <= 0.50): "
                  f"{'met' if ratio <= 0.5 else 'NOT met'}")
        print()
    print(f"convert broken into passes, median of {args.repeats} (interleaved)")
    print_table(["phase", "ms", "share of passes"], _phase_times(model, x, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
