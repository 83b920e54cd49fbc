"""wide_resnet50_2 with every bottleneck halved inside: same shapes and speed as resnet50?

wide_resnet50_2's bottlenecks are resnet50's with twice the inner width (the outputs of
``conv1`` and ``conv2`` in every block of layer1..layer4). The script converts
``wide_resnet50_2(weights=None)`` (eval, example 1x3x224x224, CPU), checks that exactly
those inner units exist and are twice resnet50's widths, sets each to ``num_channels // 2``
(number mode) and freezes.

Correctness (exit 1 on failure): the frozen model's ``state_dict`` has the same keys and
the same shape for every key as ``resnet50(weights=None)``'s, and its output equals the
supernet's at that choice.

Speed (never fails the run): forward of the frozen model vs resnet50, batch 8x3x224x224,
``torch.no_grad``, interleaved, median of ``--repeats``. Goal: ratio <= 1.03.
``torch.fx.symbolic_trace(resnet50)`` is timed alongside as the cost any fx graph pays
(in-place ``+=`` becomes an out-of-place add).

Run: ``python benchmarks/bench_wide_resnet.py [--repeats 10] [--threads 1]``
"""

from __future__ import annotations

import re
import sys

import torch
import torchvision
from common import (  # noqa: E402
    frozen_matches,
    half_width_choices,
    interleaved_medians,
    make_parser,
    print_table,
    setup_torch,
)

import fxrazor

__all__ = ["main", "INNER_UNIT"]

INNER_UNIT = re.compile(r"^layer[1-4]\.\d+\.conv[12]$")


def _inner_units_ok(sn: fxrazor.Supernet, reference: torch.nn.Module) -> list[str]:
    """Names of the inner units; prints and returns [] if they do not match resnet50's."""
    inner = [u for u in sn.units if INNER_UNIT.match(u.name)]
    expected = [n for n, m in reference.named_modules() if INNER_UNIT.match(n)]
    if sorted(u.name for u in inner) != sorted(expected):
        print(f"ERROR: inner units {[u.name for u in inner]} != resnet50's {expected}")
        return []
    widths = {n: m.out_channels for n, m in reference.named_modules()
              if isinstance(m, torch.nn.Conv2d)}
    wrong = [(u.name, u.num_channels) for u in inner if u.num_channels != 2 * widths[u.name]]
    if wrong:
        print(f"ERROR: inner units not twice resnet50's width: {wrong}")
        return []
    return [u.name for u in inner]


def _shape_mismatches(frozen: torch.nn.Module, reference: torch.nn.Module) -> list[str]:
    got = {k: tuple(v.shape) for k, v in frozen.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    problems = [f"missing {k} {s}" for k, s in want.items() if k not in got]
    problems += [f"extra {k} {s}" for k, s in got.items() if k not in want]
    problems += [f"{k}: frozen {got[k]} vs resnet50 {s}" for k, s in want.items()
                 if k in got and got[k] != s]
    return problems


def main() -> int:
    args = make_parser(__doc__.splitlines()[0], repeats=10).parse_args()
    setup_torch(args.threads)
    wrn = torchvision.models.wide_resnet50_2(weights=None).eval()
    r50 = torchvision.models.resnet50(weights=None).eval()
    sn = fxrazor.convert(wrn, torch.randn(1, 3, 224, 224)).eval()
    inner = _inner_units_ok(sn, r50)
    if not inner:
        return 1
    sn.set_choices(half_width_choices(sn, inner))
    frozen = fxrazor.freeze(sn).eval()
    problems = _shape_mismatches(frozen, r50)
    for p in problems:
        print("MISMATCH", p)
    print(f"{len(inner)} inner units halved; state_dict keys compared: "
          f"{len(r50.state_dict())}; mismatches: {len(problems)}\n")
    x = torch.randn(8, 3, 224, 224)
    if not frozen_matches(frozen, sn, x):
        return 1
    with torch.no_grad():
        fx_r50 = torch.fx.symbolic_trace(r50)
        t = interleaved_medians({"r50": lambda: r50(x), "fx": lambda: fx_r50(x),
                                 "wrn": lambda: frozen(x)}, args.repeats, args.warmup)
    print(f"batch 8, median of {args.repeats} (interleaved); goal frozen / resnet50 <= 1.03")
    print_table(["resnet50 ms", "plain fx resnet50 ms", "frozen wrn50_2 ms",
                 "frozen / resnet50", "frozen / plain fx"],
                [[t["r50"] * 1e3, t["fx"] * 1e3, t["wrn"] * 1e3, t["wrn"] / t["r50"],
                  t["wrn"] / t["fx"]]])
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
