"""Build the GraphModule of a traced model.

``fx.GraphModule(root, graph)`` copies every layer and attribute the graph uses into a new
tree of bare container modules, walking each target's path from the top through
``nn.Module.__getattr__`` on both trees (a few hundred targets, four or five levels deep).
:func:`build_graph_module` builds the same tree, in the same order, but walks each
container path once.

Example:
    >>> import torch
    >>> from torch import fx, nn
    >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    >>> gm = build_graph_module(model, fx.Tracer().trace(model), "Net")
    >>> gm.get_submodule("0") is model[0], gm(torch.ones(1, 2)).shape
    (True, torch.Size([1, 3]))
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import fx, nn
from torch.nn.modules.module import _global_module_registration_hooks as _registration_hooks

__all__ = ["build_graph_module"]

try:  # generates its forward code only when first called: convert edits the graph first,
    # and a supernet that is only frozen never needs it
    from torch.fx._lazy_graph_module import _LazyGraphModule as _TracedGraphModule
except ImportError:  # pragma: no cover - older torch
    _TracedGraphModule = fx.GraphModule  # type: ignore[misc,assignment]  # eager fallback

# path -> (object at that path in the traced root, object at that path in the new module)
_Pairs = dict[str, tuple[Any, Any]]

# What ``nn.Module.__init__`` leaves in a bare module's ``__dict__``: a container made here
# gets fresh copies of these (its own registries), at a third of ``__init__``'s cost.
_BARE_STATE = tuple(nn.Module().__dict__.items())
_FRESH = (dict, OrderedDict, set)
_MODULE_SETATTR = nn.Module.__setattr__


def _bare_module(mode: bool) -> nn.Module:
    """``nn.Module()`` in training mode ``mode``."""
    module = object.__new__(nn.Module)
    state = module.__dict__
    for key, value in _BARE_STATE:
        state[key] = type(value)() if type(value) in _FRESH else value
    state["training"] = mode
    return module


def _add_child(parent: nn.Module, name: str, child: nn.Module) -> None:
    """``setattr(parent, name, child)`` for a parent made here (or the new GraphModule),
    which holds nothing else under ``name``: straight into ``_modules`` unless module
    registration hooks are installed, which ``setattr`` runs."""
    if _registration_hooks or type(parent).__setattr__ is not _MODULE_SETATTR:
        setattr(parent, name, child)
    else:
        parent._modules[name] = child


def build_graph_module(root: nn.Module, graph: fx.Graph, class_name: str,
                       containers_follow_root: bool = False) -> fx.GraphModule:
    """What ``GraphModule(root, graph, class_name)`` builds (torch.fx's lazy GraphModule):
    the layers and attributes ``graph`` uses, shared with ``root``, in bare containers
    added in graph order; tensors that are not parameters become buffers.

    ``containers_follow_root`` puts the bare containers in ``root``'s training mode (fx
    leaves them in training mode); the shared layers keep their own modes either way.
    """
    shell = fx.Graph(tracer_cls=graph._tracer_cls, tracer_extras=graph._tracer_extras)
    gm = _TracedGraphModule(nn.Module(), shell, class_name)
    gm.training = root.training
    pairs: _Pairs = {"": (root, gm)}
    mode = root.training if containers_follow_root else True
    for node in graph.nodes:
        if node.op in ("get_attr", "call_module"):
            _install(pairs, node.target, mode)
    gm.graph = graph
    return gm


def _install(pairs: _Pairs, target: str, mode: bool) -> None:
    """torch.fx's ``_copy_attr(root, gm, target)``, with container paths looked up once."""
    parent, _, field = target.rpartition(".")
    found = _containers(pairs, parent, mode)
    if found is None:
        return  # an enclosing object is already installed whole
    source, dest = found
    value = getattr(source, field)
    if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
        persistent = field not in source._non_persistent_buffers_set
        dest.register_buffer(field, value, persistent=persistent)
    elif isinstance(value, nn.Module) and field not in dest.__dict__:
        _add_child(dest, field, value)
    else:
        setattr(dest, field, value)
    pairs[target] = (value, value)  # whole: nothing below it needs installing


def _containers(pairs: _Pairs, path: str, mode: bool) -> tuple[Any, Any] | None:
    """The (source, destination) objects at ``path``, creating a bare destination container
    (in training mode ``mode``) where there is none; None when the source object itself is
    already installed there."""
    found = pairs.get(path)
    if found is None:
        up_path, _, item = path.rpartition(".")
        up = _containers(pairs, up_path, mode)
        if up is None:
            return None
        source = getattr(up[0], item)
        # the destination is a container made here (or the new GraphModule): its children
        # are in ``_modules`` alone, and a missing one is not an AttributeError to raise
        dest = up[1]._modules.get(item)
        if dest is None:
            dest = _bare_module(mode)
            _add_child(up[1], item, dest)
        found = pairs[path] = (source, dest)
    return None if found[0] is found[1] else found
