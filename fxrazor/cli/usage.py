"""User errors of the command line: one line on stderr and exit status 2, no traceback.

A :class:`UsageError` is a mistake the user can fix (an unknown model, a missing extra, a
bad option); :func:`one_line` folds a library error's message (an
:class:`~fxrazor.errors.FxRazorError` may span lines and carry torch.fx's "Original
traceback: None" and "Use tlparse" notes) into the single line the command prints.

Example:
    >>> one_line("bad shape\\nWhile executing %x\\nOriginal traceback:\\nNone\\nUse tlparse to see")
    'bad shape While executing %x'
"""

from __future__ import annotations

import re

__all__ = ["UsageError", "EXIT_USAGE", "one_line", "missing_extra"]

EXIT_USAGE = 2
"""The exit status of every user error (argparse's own)."""

_MAX_CHARS = 600  # a message longer than this is cut: a line is read, a page is skipped

# torch.fx and torch.export append these to every error of a graph they ran; to a user of
# the command they say nothing
_NOISE = (
    re.compile(r"^Original traceback:\s*(None)?$"),
    re.compile(r"^None$"),
    re.compile(r"^Use tlparse\b.*"),
    re.compile(r"^Set TORCH_LOGS\b.*"),
    re.compile(r"^For (more information|C\+\+ stack trace).*"),
)


class UsageError(Exception):
    """A mistake of the command line's user; the message is printed as one line."""


def one_line(message: str) -> str:
    """``message`` on one line: lines joined by spaces, torch's noise lines dropped,
    whitespace collapsed, and cut at a few hundred characters."""
    lines = [line.strip() for line in message.splitlines()]
    kept = [line for line in lines if line and not any(p.match(line) for p in _NOISE)]
    text = re.sub(r"\s+", " ", " ".join(kept)).strip()
    text = re.sub(r"\s*Original traceback:\s*(None)?\s*", " ", text).strip()
    if len(text) > _MAX_CHARS:
        text = text[:_MAX_CHARS - 3].rstrip() + "..."
    return text or "(no message)"


def missing_extra(what: str, package: str, extra: str) -> UsageError:
    """The error for an optional package that is not installed, naming the extra."""
    return UsageError(f"{what} needs {package}, which is not installed: "
                      f"pip install 'fxrazor[{extra}]'")
