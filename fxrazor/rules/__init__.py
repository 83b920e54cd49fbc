"""Channel rules: how each op and layer relates the channel elements of its inputs and
outputs.

``functions`` (torch functions and tensor methods), ``layers`` (leaf modules), ``slicing``
(cat, split, chunk, getitem), ``indexing`` (advanced indexing), ``contraction`` (matmul,
einsum, bmm), ``args`` (reading a call's arguments). Every rule takes the
:class:`~fxrazor.analysis.context.RuleContext` and the node.
"""

from __future__ import annotations

__all__: list[str] = []
