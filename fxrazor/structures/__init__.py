"""Data structures shared by searchers and pruners (see :mod:`fxrazor.structures.subnet`).

Example:
    >>> from fxrazor.structures import Candidates
    >>> len(Candidates())
    0
"""

from __future__ import annotations

from fxrazor.structures.subnet import (
    Candidates,
    convert_fix_subnet,
    export_fix_subnet,
    load_fix_subnet,
    save_fix_subnet,
)

__all__ = [
    "Candidates",
    "convert_fix_subnet",
    "export_fix_subnet",
    "load_fix_subnet",
    "save_fix_subnet",
]
