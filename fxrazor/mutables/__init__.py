"""Mutables: searchable values, channels, channel units and choice blocks.

Example:
    >>> from fxrazor.mutables import OneShotMutableValue
    >>> OneShotMutableValue([3, 1, 2]).choices
    [1, 2, 3]
"""

from __future__ import annotations

from fxrazor.mutables.base import BaseMutable, DumpChosen
from fxrazor.mutables.channel_container import MutableChannelContainer
from fxrazor.mutables.channel_unit import MutableChannelUnit, SequentialMutableChannelUnit
from fxrazor.mutables.dcff_unit import calc_information, dcff_temperature
from fxrazor.mutables.derived_mutable import DerivedMutable, concat_mutable_channels
from fxrazor.mutables.diff_mutable import (
    DiffMutableModule,
    DiffMutableOP,
    OneHotMutableOP,
)
from fxrazor.mutables.diff_route import DiffChoiceRoute
from fxrazor.mutables.dmcp_flops import current_flops, expected_flops
from fxrazor.mutables.dmcp_unit import DMCPMutableChannel
from fxrazor.mutables.method_units import (
    DCFFChannelUnit,
    DMCPChannelUnit,
    L1MutableChannelUnit,
    SlimmableChannelUnit,
)
from fxrazor.mutables.mutable_channel import (
    BaseMutableChannel,
    SequentialMutableChannel,
    SimpleMutableChannel,
    SquentialMutableChannel,
)
from fxrazor.mutables.mutable_module import MutableModule, OneShotMutableModule, OneShotMutableOP
from fxrazor.mutables.mutable_value import MutableValue, OneShotMutableValue
from fxrazor.mutables.one_shot_channel import OneShotMutableChannel
from fxrazor.mutables.one_shot_unit import OneShotMutableChannelUnit

__all__ = [
    "BaseMutable",
    "BaseMutableChannel",
    "DCFFChannelUnit",
    "DMCPChannelUnit",
    "DMCPMutableChannel",
    "DerivedMutable",
    "DiffChoiceRoute",
    "DiffMutableModule",
    "DiffMutableOP",
    "DumpChosen",
    "L1MutableChannelUnit",
    "MutableChannelContainer",
    "MutableChannelUnit",
    "MutableModule",
    "MutableValue",
    "OneHotMutableOP",
    "OneShotMutableChannel",
    "OneShotMutableChannelUnit",
    "OneShotMutableModule",
    "OneShotMutableOP",
    "OneShotMutableValue",
    "SequentialMutableChannel",
    "SequentialMutableChannelUnit",
    "SimpleMutableChannel",
    "SlimmableChannelUnit",
    "SquentialMutableChannel",
    "calc_information",
    "concat_mutable_channels",
    "current_flops",
    "dcff_temperature",
    "expected_flops",
]
