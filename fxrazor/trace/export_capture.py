"""The second capture front-end: non-strict ``torch.export``, rebuilt as a layer-level graph.

Models whose top-level forward symbolic tracing cannot follow (Hugging Face transformers'
output-capturing decorators and ``**kwargs`` plumbing, for one) are captured by
``torch.export.export(model, args, kwargs, strict=False)``, which runs the Python code for
real on fake tensors. Its graph is ATen calls on lifted parameters; the analysis wants what
the fx front-end gives: torch layers as ``call_module`` nodes named by their module paths,
parameters read with ``get_attr``, torch-level calls. So the exported graph is rebuilt:

* the calls made inside one call of a known layer (``nn.Linear``, ``nn.Conv2d``, norms,
  ``nn.Embedding``, ... and the leaf modules the caller names) are found by their
  ``nn_module_stack`` and become one ``call_module`` of that layer, by its path
  (``model.layers.0.mlp.up_proj``), when the call takes one tensor and gives one;
* every other parameter, buffer or constant becomes a ``get_attr`` of its own path;
* ATen calls become the torch calls they stand for (:mod:`fxrazor.trace.aten_ops`); others
  stay ATen calls, which the analysis pins, naming them.

Batch and sequence sizes are exported as dynamic dims where the model allows, so the graph
reads them from the inputs (``x.size(0)``) as the fx front-end's does, and a frozen model
runs on other batch sizes and lengths. A model on the meta device (a plan for a model too
large to hold) is exported at the example's sizes: that is twice as fast.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> from fxrazor.layers import layer_table
    >>> traced = capture_export(model, torch.randn(3, 4), layers=layer_table())
    >>> [(n.op, n.target) for n in traced.graph_module.graph.nodes]
    [('placeholder', 'input'), ('call_module', '0'), ('call_module', '1'), ('call_module', '2'), ('output', 'output')]
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import fx, nn
from torch.export import Dim, ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from torch.utils import _pytree as pytree

from fxrazor.decompose import decompose_modules
from fxrazor.errors import TraceFailedError, UnsupportedModelError
from fxrazor.trace.aten_ops import DROPPED_ATEN_OPS, to_torch_call
from fxrazor.trace.copying import copy_module
from fxrazor.trace.export_groups import LayerCall, find_layer_calls
from fxrazor.trace.shapes import propagate_shapes
from fxrazor.trace.tracer import KnownLayer, TracedModel, _split_leaf_spec, normalize_inputs

__all__ = ["capture_export", "export_model"]

logger = logging.getLogger(__name__)


def _split_inputs(example_inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


def _auto_dims(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return {d: Dim.AUTO for d in range(value.dim())}
    return None


def _dynamic_shapes(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Every tensor dim as ``Dim.AUTO``, in the form export matches to the inputs: a tuple
    for positional inputs alone, else a dict by forward parameter name."""
    if not kwargs:
        return tuple(_auto_dims(a) for a in args)
    names = [p.name for p in inspect.signature(model.forward).parameters.values()]
    shapes = {name: _auto_dims(a) for name, a in zip(names, args, strict=False)}
    shapes.update({k: _auto_dims(v) for k, v in kwargs.items()})
    return shapes


def export_model(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                 dynamic: bool = True) -> ExportedProgram:
    """``torch.export.export(model, args, kwargs, strict=False)``, with every tensor dim
    left for export to keep dynamic where the model allows (batch, sequence length); a
    model that rejects that, or ``dynamic=False``, is exported at the example's sizes."""
    if not dynamic:
        return torch.export.export(model, args, kwargs, strict=False)
    try:
        return torch.export.export(model, args, kwargs, strict=False,
                                   dynamic_shapes=_dynamic_shapes(model, args, kwargs))
    except Exception as e:  # noqa: BLE001 - any failure is retried statically, then reported
        logger.info("export with dynamic sizes failed (%s: %s); exporting static sizes",
                    type(e).__name__, str(e).strip().splitlines()[0][:200] if str(e).strip()
                    else "")
    return torch.export.export(model, args, kwargs, strict=False)


def capture_export(model: nn.Module, example_inputs: Any, leaf_modules: Iterable[type | str] = (),
                   copy_model: bool = True, layers: Mapping[type, KnownLayer] | None = None
                   ) -> TracedModel:
    """Capture ``model`` with non-strict ``torch.export`` as a layer-level fx graph.

    Args:
        model: the model; it is never modified (``copy_model=False`` shares its layers).
        example_inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs.
        leaf_modules: module types or qualified names kept as single ``call_module`` nodes
            (a call that takes one tensor and gives one).
        copy_model: give the result its own copy of every layer and weight it uses.
        layers: the known layer types (``fxrazor.layers.LAYERS`` in ``convert``).

    Returns:
        The captured model, ``tensor_meta`` on every node, as ``trace_model`` returns it.

    Raises:
        TraceFailedError: export failed; the message carries export's own.
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(
            f"expected a torch.nn.Module, got {type(model).__name__}; wrap functions in a Module")
    leaf_types, leaf_names = _split_leaf_spec(leaf_modules)
    user_ids: set[int] = set()
    source = copy_module(model, user_ids) if copy_model else model
    decompose_modules(source)
    args, kwargs = _split_inputs(example_inputs)
    try:
        with _no_inlined_autograd_functions():
            # a model on the meta device is a plan, never run: its sizes stay the example's
            # (dynamic sizes cost export about twice the time, 6 s → 11 s on a 7B Llama)
            program = export_model(source, args, kwargs, dynamic=not _on_meta(source))
    except Exception as e:  # noqa: BLE001 - re-raised with export's message, nothing hidden
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise TraceFailedError(
            f"torch.export cannot capture {type(model).__name__}: {type(e).__name__}: {first}"
        ) from e
    known = layers or {}
    calls = find_layer_calls(program, source, known, leaf_types, leaf_names)
    gm = _rebuild(program, source, calls, type(model).__name__)
    example_args = normalize_inputs(gm, example_inputs)
    propagate_shapes(gm, example_args, {t: r.meta_shape for t, r in known.items()
                                        if r.meta_shape is not None})
    return TracedModel(gm, {}, example_args, frozenset(user_ids) if copy_model else None)


def _on_meta(module: nn.Module) -> bool:
    return any(t.is_meta for t in (*module.parameters(), *module.buffers()))


@contextmanager
def _no_inlined_autograd_functions() -> Iterator[None]:
    """Refuse custom ``torch.autograd.Function``s: export would inline their forward and
    drop their backward, silently changing the gradients (the fx front-end keeps them)."""
    function_type = torch.autograd.Function
    original = function_type.__dict__["apply"]

    def apply(cls: type, *args: Any, **kwargs: Any) -> Any:
        if cls.__module__.split(".")[0] == "torch":  # torch's own, e.g. a custom op's
            # generated backward: export keeps such an op as one call
            return original.__get__(None, cls)(*args, **kwargs)
        raise TraceFailedError(
            f"the model calls the custom autograd.Function {cls.__qualname__}: torch.export "
            f"would inline its forward and lose its backward; use capture='fx', which keeps "
            f"the call")

    function_type.apply = classmethod(apply)  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        function_type.apply = original  # type: ignore[method-assign]


def _attr_targets(program: ExportedProgram) -> dict[str, str]:
    """Placeholder name → path of the parameter, buffer or constant it lifts."""
    found = {}
    for spec in program.graph_signature.input_specs:
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR) \
                and spec.target is not None:
            found[spec.arg.name] = spec.target
    return found


def _rebuild(program: ExportedProgram, source: nn.Module, calls: dict[fx.Node, LayerCall],
             class_name: str) -> fx.GraphModule:
    graph = fx.Graph()
    attrs = _attr_targets(program)
    root: dict[str, Any] = {}
    env: dict[fx.Node, Any] = {}
    consts = program.constants

    def value(node: fx.Node) -> Any:
        if node not in env:  # a lifted parameter, buffer or constant, read where first used
            target = attrs[node.name]
            root[target] = consts[target] if target in consts else _lookup(source, target)
            env[node] = graph.get_attr(target)
        return env[node]

    def mapped(a: Any) -> Any:
        return fx.node.map_arg(a, value)

    skipped = {n for call in calls.values() for n in call.nodes}
    for node in program.graph.nodes:
        if node.op == "placeholder":
            if node.name not in attrs:
                env[node] = graph.placeholder(node.name)
        elif node.op == "call_function":
            if node in calls:
                call = calls[node]
                root[call.path] = source.get_submodule(call.path)
                env[node] = graph.call_module(call.path, tuple(mapped(a) for a in call.inputs))
            elif node in skipped or node.target in DROPPED_ATEN_OPS:
                continue
            else:
                op, target, args, kwargs = to_torch_call(node.target, node.args, node.kwargs)
                if op == "identity":
                    env[node] = mapped(args[0])
                    continue
                env[node] = graph.create_node(op, target, mapped(args), mapped(kwargs),
                                              name=node.name)
        elif node.op == "output":
            _output(graph, program, node, env, value, root, source, skipped)
    graph.lint()
    return fx.GraphModule(root, graph, class_name)


def _lookup(source: nn.Module, target: str) -> Any:
    owner, _, name = target.rpartition(".")
    return getattr(source.get_submodule(owner) if owner else source, name)


def _output(graph: fx.Graph, program: ExportedProgram, node: fx.Node, env: dict[fx.Node, Any],
            value: Any, root: dict[str, Any], source: nn.Module, skipped: set[fx.Node]) -> None:
    results = node.args[0]
    if not isinstance(results, (tuple, list)):  # export's output node holds a flat tuple
        raise TypeError(f"unexpected exported output {results!r}")
    user: list[Any] = []
    for spec, result in zip(program.graph_signature.output_specs, results, strict=True):
        if spec.kind == OutputKind.USER_OUTPUT:
            user.append(fx.node.map_arg(result, value) if isinstance(result, fx.Node)
                        else result)
        elif spec.kind == OutputKind.BUFFER_MUTATION and result not in skipped:
            # a buffer written outside a known layer: write it, as the model does
            target = spec.target
            root[target] = _lookup(source, target)
            graph.call_method("copy_", (graph.get_attr(target), fx.node.map_arg(result, value)))
        elif spec.kind not in (OutputKind.BUFFER_MUTATION,):
            raise TraceFailedError(f"torch.export output {spec.kind.name} of {spec.target!r} "
                                   f"is not supported by the export front-end")
    graph.output(_plain_structure(program.call_spec.out_spec, user))


def _plain_structure(spec: Any, leaves: list[Any]) -> Any:
    """The model's output structure in plain containers: tuples and lists stay, dicts and
    dict-like outputs (a ``ModelOutput``) become dicts of their keys, so the frozen module
    needs nothing but torch."""
    if spec is None:
        return leaves[0] if len(leaves) == 1 else tuple(leaves)
    tree = pytree.tree_unflatten(leaves, spec)
    return _plain(tree)


def _plain(tree: Any) -> Any:
    if isinstance(tree, fx.Node) or tree is None or isinstance(tree, (int, float, bool, str)):
        return tree
    if isinstance(tree, dict):  # dicts and OrderedDict subclasses such as ModelOutput
        return {str(k): _plain(v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        items = [_plain(v) for v in tree]
        return items if isinstance(tree, list) else tuple(items)
    if hasattr(tree, "__dataclass_fields__"):
        return {k: _plain(getattr(tree, k)) for k in tree.__dataclass_fields__}
    return tree
