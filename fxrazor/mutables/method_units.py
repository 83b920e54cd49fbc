"""Channel units of specific pruning methods, one file each: L1-norm, slimmable, DCFF, DMCP.

Example:
    >>> import torch
    >>> unit = L1MutableChannelUnit(4)
    >>> unit.set_importance(torch.tensor([0.1, 3.0, 2.0, 0.5]))
    >>> unit.current_choice = 2
    >>> unit.current_mask.tolist()
    [False, True, True, False]
"""

from fxrazor.mutables.dcff_unit import DCFFChannelUnit
from fxrazor.mutables.dmcp_unit import DMCPChannelUnit
from fxrazor.mutables.l1_unit import L1MutableChannelUnit
from fxrazor.mutables.slimmable_unit import SlimmableChannelUnit

__all__ = ["L1MutableChannelUnit", "SlimmableChannelUnit", "DCFFChannelUnit", "DMCPChannelUnit"]
