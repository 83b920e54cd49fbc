"""Choice blocks traced inline: every branch of a block on the block's own input.

A choice block (a NAS op mutable: one candidate per forward, or a weighted mix of them)
would otherwise be an opaque leaf whose boundary channels the analysis must pin. Instead,
the tracer can trace *every* branch of such a block on the block's input and join their
outputs with :func:`block_join`, an element-wise marker: the analysis then sees each
branch's layers, the branches' inputs reading one tensor and their outputs meeting like a
residual add, so channel units span the block. Each node made inside a branch carries
``meta[BRANCH_KEY] = (block path, branch name)`` and the join node carries a
:class:`BlockCall` under ``meta[BLOCK_KEY]``; a later pass folds each block back into one
call of the block (``fxrazor.passes.fold_blocks``).

This module knows nothing of mutables: ``convert`` hands the tracer an *expander* that says,
for a module, which branches it has (see :data:`BlockExpander`).

Example:
    >>> import torch
    >>> block_join(torch.ones(2), torch.zeros(2)).tolist()  # the first branch's value
    [1.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

__all__ = ["Branch", "BlockCall", "BlockExpander", "block_join", "trace_block", "BRANCH_KEY",
           "BLOCK_KEY"]

BRANCH_KEY = "fxr_branch"
BLOCK_KEY = "fxr_block"


@dataclass(frozen=True)
class Branch:
    """One branch of a choice block.

    Attributes:
        name: the branch's name in the block (a candidate name).
        module: the branch's module.
        input_index: None when the branch reads the block's input; ``i`` when the block
            takes a list of inputs and the branch reads item ``i`` (a DARTS route edge).
    """

    name: str
    module: nn.Module
    input_index: int | None = None


#: ``expander(module)``: the module's branches when it is a choice block to trace inline,
#: else None (traced as usual: a leaf or its own forward).
BlockExpander = Callable[[nn.Module], Sequence[Branch] | None]


@dataclass
class BlockCall:
    """What the join node of a block records: enough to call the block again.

    Attributes:
        path: the block's module path.
        module: the block itself (in the traced model).
        names: the branch names, one per join argument, in order.
        inputs: the node each branch read, one per branch.
        args: the block call's positional arguments (nodes where there were proxies).
    """

    path: str
    module: nn.Module
    names: tuple[str, ...]
    inputs: tuple[fx.Node, ...]
    args: tuple[Any, ...]


def block_join(*outputs: torch.Tensor) -> torch.Tensor:
    """Marks where a traced block's branches meet; its value is the first branch's output.

    Only the traced (flat) graph holds it: the analysis treats it as an element-wise op
    over all branches, and folding replaces it by a call of the block."""
    return outputs[0]


def _branch_inputs(branches: Sequence[Branch], args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> list[fx.Proxy] | None:
    """Each branch's input proxy, or None when the call does not have the plain form
    (one positional input, no keywords: e.g. an explicit ``arch_param``)."""
    if kwargs or len(args) != 1:
        return None
    first = args[0]
    found = []
    for branch in branches:
        if branch.input_index is None:
            value = first
        elif isinstance(first, (list, tuple)) and 0 <= branch.input_index < len(first):
            value = first[branch.input_index]
        else:
            return None
        if not isinstance(value, fx.Proxy):
            return None
        found.append(value)
    return found


def trace_block(tracer: Any, module: nn.Module, path: str, branches: Sequence[Branch], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> fx.Proxy | None:
    """Trace every branch on its input and join the outputs; None (nothing traced) when the
    call does not fit. ``tracer`` keeps a stack ``branch_stack`` that its ``create_node``
    writes into each node's meta. A branch whose output is not one tensor raises
    ``fx.proxy.TraceError`` naming the block, so that tracing retries with it a leaf."""
    inputs = _branch_inputs(branches, args, kwargs)
    if inputs is None or not branches:
        return None
    outputs = []
    for branch, value in zip(branches, inputs, strict=True):
        tracer.branch_stack.append((path, branch.name))
        try:
            out = branch.module(value)
        finally:
            tracer.branch_stack.pop()
        if not isinstance(out, fx.Proxy):
            error = fx.proxy.TraceError(
                f"branch {branch.name!r} of block {path!r} does not return one tensor")
            error._fxrazor_module = path  # type: ignore[attr-defined]
            raise error
        outputs.append(out)
    joined = tracer.create_proxy("call_function", block_join, tuple(outputs), {})
    joined.node.meta[BLOCK_KEY] = BlockCall(
        path, module, tuple(b.name for b in branches), tuple(v.node for v in inputs),
        tracer.create_arg(args))
    return joined
