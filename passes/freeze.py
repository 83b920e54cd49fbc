"""Freeze: turn a supernet's current subnet into a new, smaller plain GraphModule.

Each dynamic op becomes its static module with sliced contiguous weights, parameters used
directly in the graph are sliced, size literals become constants, and searchable choice
blocks are replaced by their chosen candidate. The result holds only torch types, so it
runs, scripts and exports without fxrazor. The supernet is not modified.

Example:
    >>> import torch
    >>> from torch import nn
    >>> import fxrazor
    >>> sn = fxrazor.convert(nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)),
    ...                      torch.randn(1, 3, 4, 4))
    >>> sn.set_choices({"0": 3})
    >>> frozen = freeze(sn)
    >>> frozen.get_submodule("0").weight.shape
    torch.Size([3, 3, 1, 1])
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import fx, nn

from fxrazor.layers import LAYERS, LayerRecord, inplace_safe_types
from fxrazor.ops import DynamicOp, DynamicParam, SizeCounter
from fxrazor.passes.inplace_adds import restore_inplace_adds
from fxrazor.passes.nas_blocks import OP_TYPES, freeze_op
from fxrazor.trace.signature import SPECIALIZED_KEY

if TYPE_CHECKING:  # the supernet is the face's type, built from this package's passes
    from fxrazor.supernet import Supernet

__all__ = ["freeze"]


def _static_module(module: nn.Module, target: str) -> nn.Module:
    if isinstance(module, DynamicOp) or hasattr(module, "to_static"):
        return cast(Any, module).to_static()  # a dynamic op or a decomposed layer
    if isinstance(module, OP_TYPES):  # its chosen candidate(s), each made plain
        return freeze_op(module, target, lambda c: _static_candidate(c, target))
    return copy.deepcopy(module)


def _static_candidate(module: nn.Module, target: str) -> nn.Module:
    """A candidate of a choice block, plain: a candidate traced into a graph module (see
    ``fold_blocks``) is frozen as a graph, one of a single layer becomes that layer."""
    if not isinstance(module, fx.GraphModule):
        return _static_module(module, target)
    frozen = _freeze_graph(module)
    nodes = list(frozen.graph.nodes)
    if (len(nodes) == 3 and nodes[1].op == "call_module" and nodes[1].args == (nodes[0],)
            and not nodes[1].kwargs and nodes[2].args == (nodes[1],)):
        return frozen.get_submodule(str(nodes[1].target))  # x -> layer(x): the layer
    return frozen


def _copy_attr(gm: fx.GraphModule, target: str) -> Any:
    owner_path, _, attr = target.rpartition(".")
    owner = gm.get_submodule(owner_path) if owner_path else gm
    value = getattr(owner, attr)
    if isinstance(value, nn.Parameter):
        return nn.Parameter(value.detach().clone(), value.requires_grad)
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    return copy.deepcopy(value)


def _retie(pairs: list[tuple[nn.Module, nn.Module]]) -> None:
    """Parameters shared in the supernet (a tied embedding and LM head) stay shared when
    their frozen slices are equal."""
    seen: dict[int, list[nn.Parameter]] = {}
    for old, new in pairs:
        for name, param in old._parameters.items():
            frozen = new._parameters.get(name)
            if param is None or frozen is None:
                continue
            for other in seen.setdefault(id(param), []):
                if other.shape == frozen.shape and torch.equal(other, frozen):
                    new._parameters[name] = other
                    break
            else:
                seen[id(param)].append(frozen)


def _param_name(module: DynamicParam, node_target: str, layers: set[str]) -> str:
    """The model's own name for a sliced parameter or buffer (so the frozen state_dict
    uses the model's keys), unless a layer of the graph owns that path."""
    parts = module.target.split(".") if module.target else []
    owners = {".".join(parts[:k]) for k in range(1, len(parts) + 1)}
    return module.target if parts and not owners & layers else node_target


def freeze(supernet: Supernet, layers: Mapping[type, LayerRecord] | None = None
           ) -> fx.GraphModule:
    """Return a new plain GraphModule of ``supernet``'s current subnet.

    Args:
        supernet: a :class:`fxrazor.supernet.Supernet`.
        layers: the layer records (default :data:`fxrazor.layers.LAYERS`): which layers'
            outputs a residual may be added into in place.

    Returns:
        A GraphModule with only torch modules, sliced weights and constant sizes.
    """
    supernet.sync()
    return _freeze_graph(supernet.graph_module, layers)


def _freeze_graph(source: fx.GraphModule, layers: Mapping[type, LayerRecord] | None = None
                  ) -> fx.GraphModule:
    """The plain GraphModule of ``source`` at its current selections (modes kept)."""
    graph = fx.Graph()
    env: dict[fx.Node, Any] = {}
    targets: dict[str, Any] = {}
    converted: list[tuple[nn.Module, nn.Module]] = []
    paths = {n.target for n in source.graph.nodes if n.op == "call_module"}
    for node in source.graph.nodes:
        if node.op == "call_module":
            module = source.get_submodule(node.target)
            if isinstance(module, SizeCounter):
                env[node] = module.value
                continue
            if isinstance(module, DynamicParam):
                name = _param_name(module, node.target, paths)
                targets[name] = module.to_static()
                env[node] = graph.get_attr(name)
                env[node].meta = dict(node.meta)
                continue
            if node.target not in targets:
                targets[node.target] = _static_module(module, node.target)
                converted.append((module, targets[node.target]))
        elif node.op == "get_attr" and node.target not in targets:
            targets[node.target] = _copy_attr(source, node.target)
        env[node] = graph.node_copy(node, lambda n: env[n])
        if node.op == "output" or (node.op == "placeholder" and isinstance(node.type, str)):
            # an annotation left a string (``from __future__ import annotations``) comes
            # out as a name TorchScript cannot resolve; unannotated means Tensor to it.
            # Resolved input ones stay: they are the model's signature (see
            # trace.signature). The return annotation goes: a model may return another
            # type in eager mode than it says (GoogLeNet's outputs in eval)
            env[node].type = None
    _retie(converted)
    # a frozen choice block holds modules already in their own modes: remember them all
    modes = [(m, m.training) for layer, static in converted if isinstance(layer, OP_TYPES)
             for m in static.modules()]
    frozen = fx.GraphModule(targets, graph, class_name=type(source).__name__)
    if SPECIALIZED_KEY in source.meta:  # the arguments baked in, as in the supernet
        frozen.meta[SPECIALIZED_KEY] = dict(source.meta[SPECIALIZED_KEY])
    frozen.train(source.training)
    for layer, static in converted:  # each layer keeps its own mode, as in the supernet
        static.train(layer.training)
    for module, mode in modes:
        module.training = mode
    restore_inplace_adds(frozen, inplace_safe_types(LAYERS if layers is None else layers),
                         recompile=False)
    frozen.graph.lint()
    frozen.recompile()
    return frozen
