"""torch.nn blocks that tracing goes through instead of keeping whole.

torch.fx keeps every ``torch.nn`` module as one opaque call. For the transformer layers
that hides their linear layers and attention from the channel analysis, so they are traced
through like user code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["TRACED_TORCH_BLOCKS", "mha_fastpath_disabled"]

# torch.nn blocks whose forward is traced through (fx would keep them whole, as it keeps
# every torch.nn module): their layers then prune like any others. Their forward checks a
# fused fast path first, which reads tensors' properties and the attention's packed
# projection; tracing runs with that path disabled (the traced graph never takes it).
TRACED_TORCH_BLOCKS: frozenset[type] = frozenset({nn.TransformerEncoderLayer,
                                                   nn.TransformerDecoderLayer})


@contextlib.contextmanager
def mha_fastpath_disabled() -> Iterator[None]:
    """Run the block with torch's fused attention fast path off, then restore it.

    Example:
        >>> with mha_fastpath_disabled():
        ...     torch.backends.mha.get_fastpath_enabled()
        False
    """
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)
