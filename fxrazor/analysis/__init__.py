"""Channel analysis: the element algebra, the context that rules call, grouping of joined
elements into units, and the immutable result.

Modules: ``elements`` (channel elements of tensors, joins, pins), ``context``
(:class:`~fxrazor.analysis.context.RuleContext`, what a rule may ask and do), ``grouping`` and
``segments`` (connected elements → units), ``result`` (``Slot``, ``UnitSpec``,
``ChannelAnalysis``).
"""

from __future__ import annotations

__all__: list[str] = []
