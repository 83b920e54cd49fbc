"""Mutators: one choices dict over the searchable parts of a supernet.

:class:`ChannelMutator` handles the channel units; :class:`NasMutator` the op mutables
(``OneShotMutableOP``, ``DiffMutableOP``, ``OneHotMutableOP``, ``DiffChoiceRoute``) and
value mutables, grouped by alias, with the differentiable ops' arch params. A
``Supernet`` holds one of each and merges them in ``choices()``.

Example:
    >>> from torch import nn
    >>> from fxrazor.mutators import NasMutator
    >>> from fxrazor.mutables import OneShotMutableValue
    >>> mutator = NasMutator()
    >>> mutator.prepare_from_supernet(nn.Identity(), {"k": OneShotMutableValue([3, 5])})
    >>> mutator.current_choices, mutator.min_choices
    ({'k': 5}, {'k': 3})
"""

from __future__ import annotations

from fxrazor.mutators.channel_mutator import ChannelMutator, OneShotChannelMutator
from fxrazor.mutators.choice_rules import SAMPLE_MODES, candidate_size
from fxrazor.mutators.groups import SearchGroup, build_search_groups, param_name
from fxrazor.mutators.nas_mutator import DiffModuleMutator, NasMutator

__all__ = [
    "ChannelMutator",
    "DiffModuleMutator",
    "NasMutator",
    "OneShotChannelMutator",
    "SAMPLE_MODES",
    "SearchGroup",
    "build_search_groups",
    "candidate_size",
    "param_name",
]
