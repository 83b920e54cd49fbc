"""NAS op mutables as choice blocks: which branches they have, and how to rebuild one.

``convert`` traces every :class:`~fxrazor.mutables.mutable_module.OneShotMutableOP`,
:class:`~fxrazor.mutables.diff_mutable.DiffMutableOP` (and so ``OneHotMutableOP``) and
:class:`~fxrazor.mutables.diff_route.DiffChoiceRoute` branch by branch
(:func:`op_branches`, see ``fxrazor.trace.blocks``), so channel units span them; the fold
pass then puts back one block whose candidates are the traced graphs of dynamic ops
(:func:`with_candidates`): the block keeps its own forward, choice and arch param.

Example:
    >>> from torch import nn
    >>> from fxrazor.mutables.mutable_module import OneShotMutableOP
    >>> op = OneShotMutableOP({"a": nn.ReLU(), "b": nn.Identity()})
    >>> [(b.name, b.input_index) for b in op_branches(op)]
    [('a', None), ('b', None)]
    >>> new = with_candidates(op, {"a": nn.Tanh(), "b": nn.Identity()})
    >>> type(new.candidates["a"]).__name__, type(op.candidates["a"]).__name__
    ('Tanh', 'ReLU')
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import fx, nn

from fxrazor.errors import InvalidChoiceError
from fxrazor.mutables.diff_mutable import DiffMutableOP
from fxrazor.mutables.diff_route import DiffChoiceRoute
from fxrazor.mutables.mutable_module import OneShotMutableOP
from fxrazor.trace.blocks import BlockExpander, Branch

__all__ = ["OP_TYPES", "op_branches", "op_expander", "with_candidates", "candidate_dict",
           "freeze_op"]

#: The op mutables traced branch by branch.
OP_TYPES: tuple[type[nn.Module], ...] = (OneShotMutableOP, DiffMutableOP, DiffChoiceRoute)
_IS_OP: dict[type, bool] = {}  # by module type: a subclass of OP_TYPES or not


def candidate_dict(op: nn.Module) -> nn.ModuleDict:
    """The ModuleDict of an op mutable's remaining candidates (a route's edges)."""
    return op._edges if isinstance(op, DiffChoiceRoute) else op._candidates  # type: ignore


def op_branches(module: nn.Module) -> list[Branch] | None:
    """The branches of an op mutable (None for any other module): every remaining
    candidate reads the block's input; a route's edge reads the input at its original
    position."""
    kind = type(module)
    is_op = _IS_OP.get(kind)
    if is_op is None:  # isinstance against these ABCs is slow; tracing asks per module call
        is_op = _IS_OP[kind] = issubclass(kind, OP_TYPES)
    if not is_op:
        return None
    if isinstance(module, DiffChoiceRoute):
        order = module._all_choices
        return [Branch(name, edge, order.index(name)) for name, edge in module._edges.items()]
    return [Branch(name, c, None) for name, c in candidate_dict(module).items()]


def op_expander(leaf_types: tuple[type, ...] = ()) -> BlockExpander:
    """:func:`op_branches`, except for modules of ``leaf_types`` (the user's leaves)."""

    def expand(module: nn.Module) -> list[Branch] | None:
        if leaf_types and isinstance(module, leaf_types):
            return None
        return op_branches(module)

    return expand


def with_candidates(op: nn.Module, candidates: Mapping[str, nn.Module]) -> nn.Module:
    """A new op of ``op``'s type and state (choice, arch param binding, mode, hooks) whose
    candidates are ``candidates`` (by name, in ``op``'s order); ``op`` is unchanged."""
    new: Any = type(op).__new__(type(op))
    state = dict(op.__dict__)
    for key in ("_parameters", "_buffers", "_modules"):
        state[key] = dict(state[key])
    for key in ("_all_choices", "_current_choice"):  # lists it may edit in place
        if isinstance(state.get(key), list):
            state[key] = list(state[key])
    new.__dict__.update(state)
    old = candidate_dict(op)
    fresh = nn.ModuleDict({name: candidates[name] for name in old})
    fresh.training = old.training  # the container's own mode; its candidates keep theirs
    attr = "_edges" if isinstance(op, DiffChoiceRoute) else "_candidates"
    new._modules[attr] = fresh
    return new


def _summed(modules: dict[str, nn.Module], indices: dict[str, int] | None,
            mode: bool, class_name: str) -> fx.GraphModule:
    """A plain graph module summing ``modules`` (in order) on its input; with ``indices``,
    module ``name`` reads item ``indices[name]`` of its input list (a route's edges)."""
    graph = fx.Graph()
    # a route takes a list: annotated, so that TorchScript does not take it for a tensor
    x = graph.placeholder("x") if indices is None else \
        graph.placeholder("inputs", type_expr=list[torch.Tensor])
    total: fx.Node | None = None
    for name in modules:
        arg = x if indices is None else graph.call_function(operator.getitem, (x, indices[name]))
        out = graph.call_module(name, (arg,))
        total = out if total is None else graph.call_function(operator.add, (total, out))
    graph.output(total)
    summed = fx.GraphModule(dict(modules), graph, class_name=class_name)
    summed.training = mode
    return summed


def freeze_op(op: nn.Module, target: str, static_of: Callable[[nn.Module], nn.Module]
              ) -> nn.Module:
    """The plain module of an op mutable's current choice, its candidates made static with
    ``static_of``: a one-shot op's chosen candidate; a differentiable op's chosen
    candidate, or the sum of its chosen ones (as the op computes once fixed to them); a
    route's chosen edges, each on its own input, summed.

    Raises:
        InvalidChoiceError: a one-shot op without a current choice (it runs them all).
    """
    candidates = candidate_dict(op)
    if isinstance(op, OneShotMutableOP):
        chosen = op.current_choice
        if chosen is None:
            raise InvalidChoiceError(
                f"OneShotMutableOP '{target}' has no current choice (it runs all candidates); "
                f"set one of {op.choices} before freezing")
        return static_of(candidates[chosen])
    current: Any = op.current_choice  # a name or a list of names (differentiable ops)
    names = {current} if isinstance(current, str) else set(current)
    kept = {name: static_of(c) for name, c in candidates.items() if name in names}
    if isinstance(op, DiffChoiceRoute):
        order = op._all_choices
        return _summed(kept, {n: order.index(n) for n in kept}, op.training, "FrozenRoute")
    if len(kept) == 1:
        return next(iter(kept.values()))
    return _summed(kept, None, op.training, "FrozenMix")
