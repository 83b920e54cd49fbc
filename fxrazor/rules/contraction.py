"""Channel rules of contractions: matmul, einsum, functional linear and layer norm,
scaled dot-product attention.

In a contraction the contracted dims of both operands must lose the same positions, so
they are joined; batch dims join across operands; what remains of each operand carries
its elements to the output.

Example:
    >>> import torch
    >>> CONTRACTION_RULES[torch.matmul].__name__
    '_matmul'
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx

from fxrazor.analysis.context import RuleContext
from fxrazor.analysis.elements import TensorInfo, broadcast_join
from fxrazor.rules.args import arg

__all__ = ["CONTRACTION_RULES", "grouped_mm"]


def _matmul(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    a, b = (ctx.info(x) for x in node.args[:2])
    shape = ctx.shape(node)
    if not isinstance(a, TensorInfo) or not isinstance(b, TensorInfo) or shape is None \
            or a.ndim < 2 or b.ndim < 2:
        return ctx.unknown(node)
    space, why = ctx.space, ctx.describe(node)
    # contracted dims of both operands must be removed together
    ka, kb = a.axes.get(a.ndim - 1), b.axes.get(b.ndim - 2)
    if ka is not None and kb is not None:
        space.join(ka, kb)
    elif ka is not None:
        space.pin(ka, why + " contracts it with an inert dim")
    elif kb is not None:
        space.pin(kb, why + " contracts it with an inert dim")
    batch_a = TensorInfo(a.shape[:-2], {d: x for d, x in a.axes.items() if d < a.ndim - 2})
    batch_b = TensorInfo(b.shape[:-2], {d: x for d, x in b.axes.items() if d < b.ndim - 2})
    batch = broadcast_join(space, [batch_a, batch_b], tuple(shape[:-2]), why)
    axes = dict(batch.axes)
    n = len(shape)
    if a.ndim - 2 in a.axes:
        axes[n - 2] = a.axes[a.ndim - 2]
    if b.ndim - 1 in b.axes:
        axes[n - 1] = b.axes[b.ndim - 1]
    return TensorInfo(tuple(shape), axes)


def _layer_norm_fn(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    """F.layer_norm over the last dim: weight and bias follow it, and the normalized_shape
    literal is rewritten to the kept width."""
    info = ctx.info(node.args[0])
    shape = arg(node, 1, "normalized_shape")
    if not isinstance(info, TensorInfo) or not isinstance(shape, (list, tuple)) \
            or len(shape) != 1 or len(node.args) < 2:
        return ctx.unknown(node)
    last = info.ndim - 1
    ids = info.axes.get(last)
    params = [arg(node, 2, "weight"), arg(node, 3, "bias")]
    for p in params:
        p_info = ctx.info(p)
        if isinstance(p_info, TensorInfo):
            p_ids = p_info.axes.get(0)
            if ids is None and p_ids is not None:
                ctx.space.pin(p_ids, f"{ctx.describe(node)} normalises an inert dim")
            elif ids is not None and p_ids is not None:
                ctx.space.join(ids, p_ids)
            elif ids is not None:
                ctx.space.pin(ids, f"{ctx.describe(node)} has a non-prunable weight")
        elif p is not None:
            return ctx.unknown(node)
    if ids is not None and isinstance(shape[0], int):
        ctx.resize_arg(node, (1, 0), ids)
    if ids is not None:
        ctx.normalises(ids)
    return info


def _sdpa(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    """scaled_dot_product_attention(q, k, v): q·k contracts the head dim, the weights
    contract the key length with v; heads and batch join across q, k and v."""
    q, k, v = (ctx.info(x) for x in node.args[:3])
    mask = arg(node, 3, "attn_mask")
    shape = ctx.shape(node)
    if not all(isinstance(i, TensorInfo) and i.ndim >= 2 for i in (q, k, v)) or shape is None:
        return ctx.unknown(node)
    space, why = ctx.space, ctx.describe(node)
    _join_or_pin(space, q.axes.get(q.ndim - 1), k.axes.get(k.ndim - 1), why)
    _join_or_pin(space, k.axes.get(k.ndim - 2), v.axes.get(v.ndim - 2), why)
    if q.ndim - 1 in q.axes and arg(node, 6, "scale") is None:
        # the default scale reads the head dim's width: the full model's keeps its values
        # (a pruned head dim is then the model with those dims zeroed)
        ctx.const_args.append((node.name, (6,) if len(node.args) > 6 else ("scale",),
                               1 / math.sqrt(q.shape[-1])))
    lead = [TensorInfo(i.shape[:-2], {d: a for d, a in i.axes.items() if d < i.ndim - 2})
            for i in (q, k, v)]
    mask_info = ctx.info(mask)
    if isinstance(mask_info, TensorInfo):
        scores = TensorInfo(q.shape[:-1] + (k.shape[-2],),
                            {d: a for d, a in q.axes.items() if d < q.ndim - 1})
        broadcast_join(space, [scores, mask_info], scores.shape, why)
    batch = broadcast_join(space, lead, tuple(shape[:-2]), why)
    axes = dict(batch.axes)
    for d, i in ((len(shape) - 2, q.axes.get(q.ndim - 2)), (len(shape) - 1, v.axes.get(v.ndim - 1))):
        if i is not None:
            axes[d] = i
    return TensorInfo(tuple(shape), axes)


def _join_or_pin(space: Any, a: Any, b: Any, why: str) -> None:
    if a is not None and b is not None:
        space.join(a, b)
    elif a is not None or b is not None:
        space.pin(a if a is not None else b, why + " contracts it with an inert dim")


def _linear_fn(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    """F.linear(x, weight, bias) on parameters used in the graph: the weight's columns
    follow x's last dim, its rows (and the bias) make the output's last dim."""
    info, weight = ctx.info(node.args[0]), ctx.info(arg(node, 1, "weight"))
    bias_node = arg(node, 2, "bias")
    bias = ctx.info(bias_node)
    shape = ctx.shape(node)
    if not isinstance(info, TensorInfo) or not isinstance(weight, TensorInfo) \
            or weight.ndim != 2 or shape is None or (bias_node is not None and not
                                                       isinstance(bias, TensorInfo)):
        return ctx.unknown(node)
    why = ctx.describe(node)
    last = info.ndim - 1
    _join_or_pin(ctx.space, info.axes.get(last), weight.axes.get(1), why)
    rows = weight.axes.get(0)
    if isinstance(bias, TensorInfo):
        _join_or_pin(ctx.space, rows, bias.axes.get(0), why)
    axes = {d: a for d, a in info.axes.items() if d != last}
    if rows is not None:
        axes[len(shape) - 1] = rows
    return TensorInfo(tuple(shape), axes)


def _embedding_fn(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    """F.embedding(indices, weight): the weight's columns make the output's last dim; its
    rows are read by index (pinned: which rows exist is the indices' business)."""
    weight = ctx.info(arg(node, 1, "weight"))
    shape = ctx.shape(node)
    if not isinstance(weight, TensorInfo) or weight.ndim != 2 or shape is None:
        return ctx.unknown(node)
    if 0 in weight.axes:
        ctx.space.pin(weight.axes[0], f"{ctx.describe(node)} reads its rows by index")
    axes = {len(shape) - 1: weight.axes[1]} if 1 in weight.axes else {}
    return TensorInfo(tuple(shape), axes)


def _addmm(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    """torch.addmm(bias, x, w) = bias + x @ w (Hugging Face's GPT-2 ``Conv1D``): x's
    columns follow w's rows; w's columns and the bias make the output's columns."""
    bias, x, w = (ctx.info(a) for a in node.args[:3])
    shape = ctx.shape(node)
    if not all(isinstance(t, TensorInfo) for t in (bias, x, w)) or shape is None \
            or len(node.args) > 3 or node.kwargs:  # scaled forms (beta, alpha): pinned
        return ctx.unknown(node)
    assert isinstance(bias, TensorInfo) and isinstance(x, TensorInfo) \
        and isinstance(w, TensorInfo)  # narrowed above, for mypy
    why = ctx.describe(node)
    _join_or_pin(ctx.space, x.axes.get(1), w.axes.get(0), why)
    cols = w.axes.get(1)
    _join_or_pin(ctx.space, cols, bias.axes.get(bias.ndim - 1), why)
    axes = {0: x.axes[0]} if 0 in x.axes else {}
    if cols is not None:
        axes[1] = cols
    return TensorInfo(tuple(shape), axes)


def grouped_mm(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    """A grouped matmul of mixture-of-experts layers (``transformers::grouped_mm_fallback``):
    ``input`` (tokens × K, sorted by expert) times ``weight`` (experts × K × N), token rows
    of expert e using ``weight[e]``, where ``offs`` (one running token count per expert)
    says which rows are e's. K joins the weight's dim 1, the output's columns are its dim
    2: an expert width is pruned in every expert of the layer alike. The experts dim joins
    ``offs``'s: whole experts are pruned where the offsets come from the router's kept
    experts (``fxrazor.rules.routing``); else it is pinned."""
    x, w = ctx.info(node.args[0]), ctx.info(node.args[1])
    offs = ctx.info(node.args[2]) if len(node.args) > 2 else None
    shape = ctx.shape(node)
    if not isinstance(x, TensorInfo) or not isinstance(w, TensorInfo) or x.ndim != 2 \
            or w.ndim != 3 or shape is None:
        return ctx.unknown(node)
    why = ctx.describe(node)
    experts = offs.axes.get(0) if isinstance(offs, TensorInfo) and offs.ndim == 1 else None
    if experts is not None and 0 in w.axes:
        ctx.space.join(w.axes[0], experts)
    else:
        for ids in (w.axes.get(0), experts):
            if ids is not None:
                ctx.space.pin(ids, f"{why} routes tokens to experts along it")
    if 0 in x.axes:
        ctx.space.pin(x.axes[0], f"{why} groups its rows by expert")
    _join_or_pin(ctx.space, x.axes.get(1), w.axes.get(1), why)
    return TensorInfo(tuple(shape), {1: w.axes[2]} if 2 in w.axes else {})


def _einsum(ctx: RuleContext, node: fx.Node) -> TensorInfo | None:
    """einsum without '...': dims sharing a letter join across operands; a letter that
    only one operand has and the output lacks is a sum over it (pinned)."""
    equation, *operands = node.args
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    infos = [ctx.info(o) for o in operands]
    shape = ctx.shape(node)
    if not isinstance(equation, str) or "." in equation or "->" not in equation \
            or shape is None or not all(isinstance(i, TensorInfo) for i in infos):
        return ctx.unknown(node)
    inputs, output = equation.replace(" ", "").split("->")
    terms = inputs.split(",")
    if len(terms) != len(infos) or any(len(t) != i.ndim for t, i in zip(terms, infos,
                                                                         strict=True)):
        return ctx.unknown(node)
    why = ctx.describe(node)
    letter_ids: dict[str, Any] = {}
    for letter in dict.fromkeys("".join(terms)):
        found = [(i.axes.get(t.index(letter)), i.shape[t.index(letter)])
                 for t, i in zip(terms, infos, strict=True) if letter in t]
        sized = [(ids, n) for ids, n in found if n > 1]
        prunable = [ids for ids, _ in sized if ids is not None]
        if not prunable:
            continue
        for other in prunable[1:]:
            ctx.space.join(prunable[0], other)
        if len(prunable) < len(sized) or (letter not in output and len(sized) == 1):
            ctx.space.pin(prunable[0], f"{why} sums or mixes it with an inert dim")
        else:
            letter_ids[letter] = prunable[0]
    axes = {d: letter_ids[c] for d, c in enumerate(output) if c in letter_ids}
    return TensorInfo(tuple(shape), axes)


CONTRACTION_RULES: dict[Any, Any] = {
    torch.matmul: _matmul, torch.bmm: _matmul, torch.einsum: _einsum,
    torch.functional.einsum: _einsum, F.scaled_dot_product_attention: _sdpa,
    F.linear: _linear_fn, F.layer_norm: _layer_norm_fn, torch.layer_norm: _layer_norm_fn,
    F.embedding: _embedding_fn, torch.addmm: _addmm,
}
