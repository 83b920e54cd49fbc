"""Small helpers shared by the channel rules.

Example:
    >>> from torch import fx
    >>> g = fx.Graph()
    >>> n = g.call_function(max, (1, 2), {"key": None})
    >>> arg(n, 1, "b"), arg(n, 2, "key", 0)
    (2, None)
"""

from __future__ import annotations

from typing import Any

from torch import fx

__all__ = ["arg"]


def arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    """The call argument at position ``index`` or keyword ``name``."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)
