"""Searching a supernet's choices: evolution (MMRazor's loop) and AutoSlim's greedy search,
with constraints on resources and BN recalibration of a subnet before it is scored.

Example:
    >>> from fxrazor.search import evolution_search, greedy_search, calibrate_bn
"""

from __future__ import annotations

from fxrazor.search.calibrate import calibrate_bn
from fxrazor.search.common import Constraints, SearchError
from fxrazor.search.evolution import evolution_search
from fxrazor.search.greedy import greedy_search

__all__ = ["evolution_search", "greedy_search", "calibrate_bn", "Constraints", "SearchError"]
