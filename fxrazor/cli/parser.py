"""The command line's arguments: ``inspect``, ``prune``, ``export`` and ``export-config``.

Every argument error is one line on stderr and exit status 2 (argparse's usage block is
left out; the line points at ``--help``).

Example:
    >>> args = parse_args(["prune", "torchvision:resnet18", "--ratio", "0.5"])
    >>> args.command, args.model, args.ratio
    ('prune', 'torchvision:resnet18', 0.5)
    >>> parse_args(["prune", "--model", "resnet18"]).model  # the old form
    'resnet18'
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from fxrazor.api import UNIT_TYPES
from fxrazor.cli.choose import CRITERIA, DATA_CRITERIA_ALL
from fxrazor.cli.usage import EXIT_USAGE, one_line
from fxrazor.export import FORMATS

__all__ = ["build_parser", "parse_args"]

_DEFAULT_PRUNE_MODEL = "torchvision:resnet50"  # `fxrazor prune` alone, as before


class _OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (subcommands inherit it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} "
                              f"(see {self.prog} --help)\n")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,3,224,224") from None
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} has a dim below 1")
    return dims


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} is below {low}")
        return value
    return parse


def _common(sub: argparse.ArgumentParser, model_required: bool = True) -> None:
    sub.add_argument("model", nargs=None if model_required else "?", metavar="MODEL",
                     help="torchvision:NAME (or NAME), timm:NAME, hf:CONFIG_OR_DIR, or "
                          "package.module:factory")
    sub.add_argument("--input-shape", type=_shape, metavar="SHAPE",
                     help="example input shape, e.g. 1,3,224,224 (default: the model's)")
    sub.add_argument("--batch", type=_at_least(1), help="batch size of the example input")
    sub.add_argument("--seq-len", type=_at_least(1), default=16,
                     help="tokens of an hf: model's input_ids (default 16)")
    sub.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    sub.add_argument("--unit", default="l1", choices=sorted(UNIT_TYPES),
                     help="channel unit type (default l1: ranks channels by a criterion)")
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def _choice(sub: argparse.ArgumentParser, config: bool, required: bool) -> None:
    group = sub.add_mutually_exclusive_group(required=required)
    group.add_argument("--ratio", type=_fraction, help="every unit keeps this fraction, (0, 1]")
    if config:
        group.add_argument("--config", metavar="FILE",
                           help="a subnet config (.yaml / .json) as export-config writes")
    group.add_argument("--target-flops", type=_fraction, metavar="F",
                       help="at most this fraction of the original FLOPs, (0, 1]")
    sub.add_argument("--criterion", choices=[*CRITERIA, *DATA_CRITERIA_ALL],
                     help="channel ranking (data-free: l1, l2, bn_scale; default l1)")


def _output(sub: argparse.ArgumentParser, required: bool) -> None:
    sub.add_argument("--out", required=required, metavar="PATH", help="file to write")
    sub.add_argument("--format", choices=FORMATS,
                     help="pt2, onnx, torchscript or state_dict (default: from the suffix "
                          ".pt2 / .onnx)")


def build_parser() -> argparse.ArgumentParser:
    """The ``fxrazor`` parser and its subcommands."""
    parser = _OneLineParser(prog="fxrazor", description="Prune PyTorch models: inspect their "
                            "channel units, prune, export the pruned model or its config.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    inspect = sub.add_parser("inspect", help="units, pinned channels and why, params, FLOPs")
    _common(inspect)
    inspect.add_argument("--draw", metavar="PATH", help="draw the units to a file")

    prune = sub.add_parser("prune", help="prune, check the frozen model, time it, save it")
    _common(prune, model_required=False)
    prune.add_argument("--model", dest="model_option", help=argparse.SUPPRESS)  # old form
    _choice(prune, config=True, required=False)
    _output(prune, required=False)
    prune.add_argument("--repeats", type=_at_least(0), default=5,
                       help="timed forwards per model, alternating (0: no timing)")
    prune.add_argument("--input-size", type=_at_least(1), help=argparse.SUPPRESS)  # old form
    prune.add_argument("--save", help=argparse.SUPPRESS)  # old form: TorchScript

    export = sub.add_parser("export", help="write the pruned model as pt2, ONNX, "
                                           "TorchScript or a state_dict")
    _common(export)
    _choice(export, config=True, required=True)
    _output(export, required=True)

    export_config = sub.add_parser("export-config", help="write the subnet config "
                                                         "(.yaml / .json)")
    _common(export_config)
    _choice(export_config, config=False, required=True)
    export_config.add_argument("--out", required=True, metavar="FILE",
                               help="a .yaml, .yml or .json file")
    return parser


def _old_forms(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``prune --model NAME --input-size N --save PATH`` as the first command line took it."""
    if args.model is not None and args.model_option is not None:
        parser.error("give the model once: MODEL or --model, not both")
    args.model = args.model or args.model_option or _DEFAULT_PRUNE_MODEL
    if args.input_size is not None:
        if args.input_shape is not None:
            parser.error("give --input-shape or --input-size, not both")
        args.input_shape = (1, 3, args.input_size, args.input_size)
    if args.save is not None:
        if args.out is not None:
            parser.error("give --out or --save, not both")
        args.out, args.format = args.save, args.format or "torchscript"
    if args.ratio is None and args.config is None and args.target_flops is None:
        args.ratio = 0.5


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default: ``sys.argv[1:]``); a bad argument prints one line and
    exits with status 2."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.command == "prune":
        _old_forms(parser, args)
    return args
