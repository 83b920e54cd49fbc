"""Channel units of specific pruning methods, one file each: L1-norm, slimmable, DCFF, DMCP.

Example:
    >>> [cls.__name__ for cls in (L1MutableChannelUnit, SlimmableChannelUnit)]
    ['L1MutableChannelUnit', 'SlimmableChannelUnit']
    >>> DCFFChannelUnit(8).candidate_choices, DMCPChannelUnit(8).min_ratio
    ([1.0], 0.5)
"""

from fxrazor.mutables.dcff_unit import DCFFChannelUnit
from fxrazor.mutables.dmcp_unit import DMCPChannelUnit
from fxrazor.mutables.l1_unit import L1MutableChannelUnit
from fxrazor.mutables.slimmable_unit import SlimmableChannelUnit

__all__ = ["L1MutableChannelUnit", "SlimmableChannelUnit", "DCFFChannelUnit", "DMCPChannelUnit"]
