"""Find the calls of known layers in an exported graph, to make each one ``call_module``.

``torch.export`` records in every node's ``nn_module_stack`` the module calls it was made
in, outermost first, each under a key that is unique per call. The nodes made inside one
call of a known layer (or of a leaf module the caller names) are that call; when it reads
one tensor from outside (besides the layer's own parameters and buffers) and one of its
values is used outside, it is the layer applied to that tensor.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
    >>> program = torch.export.export(model, (torch.randn(2, 4),), strict=False)
    >>> calls = find_layer_calls(program, model, {nn.Linear: object()})
    >>> [(c.path, len(c.inputs)) for c in calls.values()]
    [('0', 1)]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from fxrazor.trace.aten_ops import DROPPED_ATEN_OPS
from fxrazor.trace.tracer import lookup_by_type

__all__ = ["LayerCall", "find_layer_calls"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerCall:
    """One call of a layer in an exported graph.

    Attributes:
        path: the layer's module path.
        inputs: the node of each tensor it reads from outside, in order.
        nodes: every node made inside the call (they all go when it becomes one node).
    """

    path: str
    inputs: tuple[fx.Node, ...]
    nodes: frozenset[fx.Node]


def _owner_call(node: fx.Node, modules: Mapping[str, nn.Module], known: Mapping[type, Any],
                leaf_types: tuple[type, ...], leaf_names: Iterable[str]) -> tuple[str, str] | None:
    """(call key, path) of the outermost layer call ``node`` was made in, if any."""
    for key, entry in (node.meta.get("nn_module_stack") or {}).items():
        path = entry[0] if isinstance(entry, tuple) else ""
        module = modules.get(path) if path else None
        if module is None:
            continue
        if path in leaf_names or (leaf_types and isinstance(module, leaf_types)) \
                or lookup_by_type(known, module) is not None:
            return key, path
    return None


def _lifted(program: ExportedProgram) -> dict[str, str]:
    return {spec.arg.name: spec.target for spec in program.graph_signature.input_specs
            if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)
            and spec.target is not None}


def _tensor_valued(node: fx.Node) -> bool:
    return isinstance(node.meta.get("val"), torch.Tensor)


def find_layer_calls(program: ExportedProgram, source: nn.Module, known: Mapping[type, Any],
                     leaf_types: tuple[type, ...] = (), leaf_names: Iterable[str] = ()
                     ) -> dict[fx.Node, LayerCall]:
    """Every layer call that can become one ``call_module`` node, by its output node.

    Args:
        program: the exported program.
        source: the module that was exported (its layers are looked up by path).
        known: the known layer types; leaf_types, leaf_names: leaves the caller names.
    """
    modules = dict(source.named_modules(remove_duplicate=False))
    leaf_names = set(leaf_names)
    groups: dict[str, tuple[str, list[fx.Node]]] = {}
    for node in program.graph.nodes:
        if node.op != "call_function" or node.target in DROPPED_ATEN_OPS:
            continue
        owner = _owner_call(node, modules, known, leaf_types, leaf_names)
        if owner is not None:
            groups.setdefault(owner[0], (owner[1], []))[1].append(node)
    lifted = _lifted(program)
    mutated = {spec.arg.name for spec in program.graph_signature.output_specs
               if spec.kind == OutputKind.BUFFER_MUTATION}
    calls = {}
    for path, nodes in groups.values():
        call = _layer_call(path, nodes, modules[path], lifted, source, mutated)
        if call is not None:
            calls[call[0]] = call[1]
    return calls


def _owned(target: str, module: nn.Module, source: nn.Module) -> bool:
    owner, _, name = target.rpartition(".")
    value = getattr(source.get_submodule(owner) if owner else source, name, None)
    return any(value is t for t in (*module.parameters(), *module.buffers()))


def _layer_call(path: str, nodes: list[fx.Node], module: nn.Module, lifted: dict[str, str],
                source: nn.Module, mutated: set[str]) -> tuple[fx.Node, LayerCall] | None:
    members = set(nodes)
    inputs: list[fx.Node] = []
    for node in nodes:
        for arg in node.all_input_nodes:
            if arg in members or arg in inputs:
                continue
            if arg.name in lifted and _owned(lifted[arg.name], module, source):
                continue  # the layer's own weight or statistic
            if not _tensor_valued(arg):
                logger.debug("%s reads a non-tensor %s; kept as its calls", path, arg.name)
                return None
            inputs.append(arg)
    outputs = [n for n in nodes if any(
        u not in members and not (u.op == "output" and n.name in mutated) for u in n.users)]
    if len(inputs) != 1 or len(outputs) != 1 or not _tensor_valued(outputs[0]):
        logger.debug("%s: %d inputs, %d outputs; kept as its calls", path, len(inputs),
                     len(outputs))
        return None
    return outputs[0], LayerCall(path, tuple(inputs), frozenset(members))
