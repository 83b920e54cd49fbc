"""Subnet records: sampled candidates, and exporting/loading fixed subnets.

Example:
    >>> from fxrazor.structures.subnet import Candidates
    >>> Candidates([{"op": "conv3x3"}]).subnets
    [{'op': 'conv3x3'}]
"""

from __future__ import annotations

from fxrazor.structures.subnet.candidates import Candidates
from fxrazor.structures.subnet.fix_subnet import (
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
