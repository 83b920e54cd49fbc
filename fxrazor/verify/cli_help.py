"""The argument parser of the verify runners: their module docstring, minus its doctest.

A runner's docstring opens with what it does and ends with an ``Example:`` section that
doctest runs; ``--help`` shows the first part only, with its line breaks.

Example:
    >>> parser = runner_parser("python -m demo", "Checks things.\\n\\nExample:\\n    >>> 1\\n    1\\n")
    >>> parser.description
    'Checks things.'
"""

from __future__ import annotations

import argparse

__all__ = ["runner_parser"]


def runner_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` described by ``doc`` up to its ``Example:`` section."""
    text = (doc or "").split("\nExample:", 1)[0].strip()
    return argparse.ArgumentParser(prog=prog, description=text,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
