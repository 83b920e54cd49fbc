"""Capture: copy the model, trace it into a torch.fx graph with layers as leaves, and
record every node's output shape (on the meta device where possible).

The stage below the analysis: it knows nothing of channels. Its entry is
:func:`fxrazor.trace.tracer.trace_model`.
"""

from __future__ import annotations

__all__: list[str] = []
