"""Command line: prune a torchvision model and report units, size and speed-up.

Example:
    >>> parse_args(["prune", "--model", "resnet18", "--ratio", "0.5"]).ratio
    0.5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fxrazor", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prune = sub.add_parser("prune", help="prune every unit of a torchvision model to a ratio")
    prune.add_argument("--model", default="resnet50", help="torchvision model name")
    prune.add_argument("--ratio", type=float, default=0.5, help="width kept per unit, (0, 1]")
    prune.add_argument("--unit", default="l1", help="unit type: l1, sequential, one_shot, ...")
    prune.add_argument("--input-size", type=int, default=224)
    prune.add_argument("--batch", type=int, default=4)
    prune.add_argument("--repeats", type=int, default=5, help="timed forwards per model")
    prune.add_argument("--save", default=None, help="write the frozen model (TorchScript)")
    return parser.parse_args(argv)


def _median_times(a: nn.Module, b: nn.Module, x: torch.Tensor,
                  repeats: int) -> tuple[float, float]:
    """Median forward times of a and b, measured alternately so drift hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    with torch.no_grad():
        a(x)
        b(x)
        for _ in range(repeats):
            for module, out in ((a, times[0]), (b, times[1])):
                start = time.perf_counter()
                module(x)
                out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def _build_model(name: str) -> nn.Module:
    try:
        import torchvision
    except ImportError as e:
        raise SystemExit("the prune command needs torchvision: pip install 'fxrazor[vision]'") from e
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise SystemExit(f"unknown torchvision classification model {name!r}")
    kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet",
                                                                      "inception_v3") else {}
    return torchvision.models.get_model(name, weights=None, **kwargs).eval()


def _prune(args: argparse.Namespace) -> int:
    import fxrazor

    torch.manual_seed(0)
    model = _build_model(args.model)
    x = torch.randn(args.batch, 3, args.input_size, args.input_size)
    start = time.perf_counter()
    sn = fxrazor.convert(model, x, unit=args.unit, unit_args={"choice_mode": "ratio"})
    convert_s = time.perf_counter() - start
    sn.set_choices({u.name: args.ratio for u in sn.units})
    start = time.perf_counter()
    frozen = fxrazor.freeze(sn)
    freeze_s = time.perf_counter() - start
    print(fxrazor.summary(sn))
    with torch.no_grad():
        error = (frozen(x) - sn(x)).abs().max().item()
    base, pruned = _median_times(model, frozen, x, args.repeats)
    print(f"\nconvert {convert_s:.2f} s, freeze {freeze_s:.2f} s, "
          f"max |frozen - supernet| = {error:.2e}")
    print(f"forward (batch {args.batch}, {args.input_size}px): original {base * 1e3:.1f} ms, "
          f"pruned {pruned * 1e3:.1f} ms, speed-up {base / pruned:.2f}x")
    if args.save:
        torch.jit.save(torch.jit.script(frozen), args.save)
        print(f"saved TorchScript model to {args.save}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fxrazor`` command."""
    args = parse_args(argv)
    if args.command == "prune":
        return _prune(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
