"""Rewrite opaque composite layers into traceable equivalents, before tracing.

Fused layers (``nn.MultiheadAttention``, torchvision's Swin window attention and patch
merging) hide their projections inside one kernel, so nothing inside them could be pruned.
``decompose_modules`` replaces them, in a private copy, by equivalent modules made of plain
layers. This is the one place decomposition runs: the tracer calls it on its copy, and the
zero-invariance oracle on its own.

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.MultiheadAttention(8, 2, batch_first=True))
    >>> decompose_modules(model)
    ['0']
    >>> type(model[0]).__name__
    'DecomposedMultiheadAttention'
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fxrazor.decompose.attention import DecomposedMultiheadAttention
from fxrazor.decompose.swin import DecomposedPatchMerging, DecomposedShiftedWindowAttention

__all__ = ["decompose_modules", "DECOMPOSITIONS", "DecomposedMultiheadAttention",
           "DecomposedPatchMerging", "DecomposedShiftedWindowAttention"]


# Traceable replacements of composite layers: each has ``supports_type(cls)`` (a necessary
# condition on the type), ``supports(module)`` and ``from_module(module)``.
DECOMPOSITIONS: list[Any] = [DecomposedMultiheadAttention, DecomposedShiftedWindowAttention,
                             DecomposedPatchMerging]


def decompose_modules(model: nn.Module) -> list[str]:
    """Replace supported composite layers of ``model`` in place; returns their names.
    Only call this on a private copy."""
    replaced = []
    # the decompositions that may replace a module, by its type: most types have none
    candidates: dict[type, list[Any]] = {}
    for name, module in list(model.named_modules()):
        kind = type(module)
        if kind not in candidates:
            candidates[kind] = [d for d in DECOMPOSITIONS if d.supports_type(kind)]
        for decomposed in candidates[kind]:
            if not decomposed.supports(module):
                continue
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr,
                    decomposed.from_module(module))
            replaced.append(name)
            break
    return replaced
