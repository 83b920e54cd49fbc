"""The channel rule of tensor indexing (``x[:, a:b]``, ``x[..., 0]``, ``x[:, None]``).

Basic slices with step 1 keep a range of a dimension's elements; their bounds are rewritten
when channels before them are pruned. Integer indices, strided slices and negative bounds on
a prunable dimension pin it. Tensor (advanced) indices are unknown to the analysis.

Example:
    >>> _normalize_index((slice(None), 0))
    (slice(None, None, None), 0)
"""

from __future__ import annotations

from typing import Any

from torch import fx

from fxrazor.analysis.context import RuleContext
from fxrazor.analysis.elements import TensorInfo

__all__ = ["index_info"]


def _normalize_index(index: Any) -> tuple:
    return index if isinstance(index, tuple) else (index,)


def _is_simple(part: Any) -> bool:
    if part is None or part is Ellipsis or isinstance(part, int):
        return True
    if isinstance(part, slice):
        return all(v is None or isinstance(v, int) for v in (part.start, part.stop, part.step))
    return False


def index_info(ctx: RuleContext, node: fx.Node, info: TensorInfo, index: Any) -> Any:
    """Element info of ``info``'s tensor indexed by ``index`` (a getitem node)."""
    parts = _normalize_index(index)
    if not all(_is_simple(p) for p in parts):
        return ctx.unknown(node)
    used = sum(1 for p in parts if p is not None and p is not Ellipsis)
    fill = (slice(None),) * max(info.ndim - used, 0)
    # original position in the index tuple of each expanded part (None: filled in)
    if Ellipsis in parts:
        at = parts.index(Ellipsis)
        origin = [*range(at), *([None] * len(fill)), *range(at + 1, len(parts))]
        parts = parts[:at] + fill + parts[at + 1:]
    else:
        origin = [*range(len(parts)), *([None] * len(fill))]
        parts = parts + fill
    shape = ctx.shape(node)
    if shape is None:
        return ctx.unknown(node)
    axes: dict[int, Any] = {}
    d = out = 0
    for k, part in enumerate(parts):
        if part is None:
            out += 1
            continue
        if d >= info.ndim:
            break
        ids = info.axes.get(d)
        if isinstance(part, int):
            if ids is not None:
                ctx.space.pin(ids, f"{ctx.describe(node)} takes a single index of it")
            d += 1
            continue
        if ids is not None:
            kept = _slice_ids(ctx, node, ids, part, origin[k], isinstance(index, tuple))
            if kept is not None and len(kept):
                axes[out] = kept
        d += 1
        out += 1
    return TensorInfo(tuple(shape), axes)


def _slice_ids(ctx: RuleContext, node: fx.Node, ids: Any, part: slice, k: int,
              in_tuple: bool) -> Any:
    start, stop, step = part.start, part.stop, part.step
    if part == slice(None):
        return ids
    negative = any(v is not None and v < 0 for v in (start, stop))
    if (step not in (None, 1)) or negative:
        ctx.space.pin(ids, f"{ctx.describe(node)} slices it with a step or negative bound")
        return ids[part]
    locator = ("index", k if in_tuple else None)
    ctx.resize_slice(node, ids, part, locator)
    return ids[part]
