"""``fxrazor.convert`` vs Torch-Pruning's ``build_dependency`` on every torchvision
classification model.

For each model (weights=None, eval): the median of
``--repeats`` interleaved runs of ``fxrazor.convert(model, x)``, of ``fxrazor.convert_``
(no weight copy) and of
``torch_pruning.DependencyGraph().build_dependency(model, example_inputs=x)``. A side that
raises is recorded as failed. Goal: fxrazor faster on every model. Torch-Pruning is not a
dependency of fxrazor (``pip install --no-deps torch-pruning==1.6.1``).

Inputs (``--input``): ``imagenet`` (default) is the size the models are evaluated at,
1x3x224x224 (299x299 for inception_v3); ``small`` is the reduced size of the CI zoo tests
(64x64 for most CNNs), where a forward costs next to nothing, so Torch-Pruning's one forward
is cheap while fxrazor's per-node graph work (trace, shapes, analysis, code generation) is
not: there fxrazor is slower on most models.

Run: ``python benchmarks/bench_convert_zoo.py [--repeats 3] [--input small]
[--models resnet18 ...]``
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import interleaved_medians, make_parser, print_table, setup_torch  # noqa: E402

import fxrazor  # noqa: E402
from fxrazor.verify.zoo import model_specs  # noqa: E402

__all__ = ["main"]


def _sides(model: torch.nn.Module, x: torch.Tensor) -> dict[str, Callable[[], Any]]:
    shared = copy.deepcopy(model)  # convert_ may change its model
    sides: dict[str, Callable[[], Any]] = {
        "fxrazor": lambda: fxrazor.convert(model, x),
        # the supernet's Python code is generated on its first forward; reading ``code``
        # generates it, so this side is convert plus the cost it defers
        "with_code": lambda: fxrazor.convert(model, x).graph_module.code,
        "convert_": lambda: fxrazor.convert_(shared, x),
    }
    if importlib.util.find_spec("torch_pruning") is not None:
        import torch_pruning as tp

        sides["tp"] = lambda: tp.DependencyGraph().build_dependency(model, example_inputs=x)
    return sides


def _measure(sides: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float | str]:
    """Medians per side; a side that fails is reported by its error instead."""
    working: dict[str, Callable[[], Any]] = {}
    result: dict[str, float | str] = {}
    for name, fn in sides.items():
        try:
            fn()
            working[name] = fn
        except Exception as e:  # noqa: BLE001 - a failing side is a row of the report
            result[name] = f"fails: {type(e).__name__}"
    result.update(interleaved_medians(working, repeats, warmup=0) if working else {})
    return result


def _ratio(ours: Any, tp: Any) -> float | None:
    return ours / tp if isinstance(ours, float) and isinstance(tp, float) else None


def _ms(value: Any) -> str:
    return f"{value * 1e3:.1f}" if isinstance(value, float) else str(value)


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0], repeats=3)
    parser.add_argument("--models", nargs="*", help="model names (default: all 80)")
    parser.add_argument("--input", choices=("imagenet", "small"), default="imagenet",
                        help="input size: ImageNet evaluation size or the CI zoo's small one")
    args = parser.parse_args()
    setup_torch(args.threads)
    rows, faster, faster_, faster_code, both = [], 0, 0, 0, 0
    specs = [s for s in model_specs(["classification"])
             if not args.models or s.name in args.models]
    for spec in specs:
        torch.manual_seed(0)
        model = spec.build()
        shape = spec.input_shape if args.input == "small" else \
            (1, 3, *(2 * (299 if spec.name == "inception_v3" else 224,)))
        x = torch.randn(shape)
        m = _measure(_sides(model, x), args.repeats)
        ours, tp = m.get("fxrazor"), m.get("tp", "not installed")
        ratios = [_ratio(m.get(side), tp) for side in ("fxrazor", "with_code", "convert_")]
        both += ratios[0] is not None
        faster += ratios[0] is not None and ratios[0] < 1.0
        faster_code += ratios[1] is not None and ratios[1] < 1.0
        faster_ += ratios[2] is not None and ratios[2] < 1.0
        rows.append([spec.name, "x".join(map(str, shape[2:])), _ms(ours),
                     _ms(m.get("with_code")), _ms(m.get("convert_")), _ms(tp),
                     *(f"{r:.2f}" if r is not None else "-" for r in ratios)])
        print(*rows[-1], sep="\t", flush=True)
        del model
    print()
    print_table(["model", "input", "convert ms", "+ code ms", "convert_ ms",
                 "Torch-Pruning ms", "convert / TP", "+ code / TP", "convert_ / TP"], rows)
    print(f"\nof the {both} models both tools convert: convert faster on {faster}, convert "
          f"with its code generated on {faster_code}, convert_ on {faster_}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
