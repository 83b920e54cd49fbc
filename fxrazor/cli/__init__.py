"""Command line: inspect a model's channel units, prune it, export the pruned model or its
subnet config.

``fxrazor inspect MODEL``, ``fxrazor prune MODEL --ratio R`` (or ``--config FILE``, or
``--target-flops F``), ``fxrazor export MODEL --config FILE --out PATH``, ``fxrazor
export-config MODEL --ratio R --out FILE.yaml``; MODEL is ``torchvision:NAME``,
``timm:NAME``, ``hf:CONFIG_OR_DIR`` or ``package.module:factory`` (see
:mod:`fxrazor.cli.models`). A user's mistake (an unknown model, a missing extra, a bad
option, any :class:`~fxrazor.errors.FxRazorError`) is one line on stderr and exit status
2; anything else is a bug and keeps its traceback.

Example:
    >>> parse_args(["prune", "--model", "resnet18", "--ratio", "0.5"]).ratio
    0.5
    >>> main(["prune", "torchvision:resnet18", "--ratio", "1.5"])
    2
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from fxrazor.cli.commands import COMMANDS
from fxrazor.cli.parser import parse_args
from fxrazor.cli.usage import EXIT_USAGE, UsageError, one_line
from fxrazor.errors import FxRazorError

__all__ = ["main", "parse_args"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fxrazor`` command; returns the exit status."""
    try:
        args = parse_args(argv)
    except SystemExit as e:  # argparse printed its one line (or --help its page)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except (UsageError, FxRazorError) as e:
        print(f"fxrazor: error: {one_line(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fxrazor: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
