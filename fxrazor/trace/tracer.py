"""Trace any model into a torch.fx graph, falling back to opaque leaves where tracing fails.

Real models contain code that symbolic tracing cannot follow: ``len()`` of a proxy,
data-dependent ``if``, iteration over a tensor. Instead of failing the whole model, the
innermost submodule whose forward raised becomes an *opaque leaf*: it stays a single
``call_module`` node, its boundary channels are pinned by the analysis, and the reason is
kept for the summary.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    >>> traced = trace_model(model, torch.randn(1, 3, 8, 8))
    >>> [n.op for n in traced.graph_module.graph.nodes]
    ['placeholder', 'call_module', 'call_module', 'output']
"""

from __future__ import annotations

import inspect
import logging
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import fx, nn

from fxrazor.decompose import decompose_modules
from fxrazor.errors import ExampleInputError, TraceFailedError, UnsupportedModelError
from fxrazor.trace import module_trace
from fxrazor.trace.autograd_functions import keep_autograd_functions
from fxrazor.trace.blocks import BRANCH_KEY, BlockExpander, trace_block
from fxrazor.trace.copying import copy_module
from fxrazor.trace.graph_module import build_graph_module
from fxrazor.trace.meta_shapes import LayerShape
from fxrazor.trace.routing import leaf_functions
from fxrazor.trace.shapes import propagate_shapes
from fxrazor.trace.signature import restore_signature
from fxrazor.trace.torch_blocks import TRACED_TORCH_BLOCKS, mha_fastpath_disabled

__all__ = ["TracedModel", "trace_model", "FxRazorTracer", "normalize_inputs", "absent_inputs",
           "KnownLayer", "lookup_by_type", "lookup_type"]

logger = logging.getLogger(__name__)

# Exceptions that mean "symbolic tracing cannot follow this code", not "the model is broken".
_TRACE_FAILURES = (
    fx.proxy.TraceError,
    TypeError,
    RuntimeError,
    AttributeError,
    NotImplementedError,
    ValueError,
    IndexError,
    KeyError,
    AssertionError,
)
_MAX_RETRIES = 64
# Argument types that are stored in the graph as they are.
_PLAIN_ARGS = frozenset({int, float, bool, complex, str, type(None), type(...), torch.dtype,
                         torch.device, torch.memory_format, torch.layout})


class KnownLayer(Protocol):
    """What tracing needs of a known layer type (a :class:`fxrazor.layers.LayerRecord`):
    known layers stay leaves, and ``meta_shape`` computes their output shape."""

    @property
    def meta_shape(self) -> LayerShape | None: ...


def lookup_by_type(table: Mapping[type, Any], module: nn.Module) -> Any:
    """``table``'s entry for the module's type, or for the nearest base class in the table
    when the subclass keeps that base's ``forward`` (e.g. a Conv3d subclass that only
    changes ``__init__``). A subclass with its own forward matches nothing.

    Example:
        >>> from torch import nn
        >>> class MyConv(nn.Conv2d):
        ...     pass
        >>> lookup_by_type({nn.Conv2d: "conv"}, MyConv(1, 1, 1))
        'conv'
    """
    return lookup_type(table, type(module))


def lookup_type(table: Mapping[type, Any], cls: type) -> Any:
    """:func:`lookup_by_type` for a class rather than an instance."""
    if cls in table:
        return table[cls]
    for base in cls.__mro__[1:]:
        if base in table:
            return table[base] if getattr(cls, "forward", None) is \
                getattr(base, "forward", None) else None
    return None


@dataclass
class TracedModel:
    """A traced copy of a model: its graph module, shapes in ``node.meta`` and opaque leaves.

    Attributes:
        graph_module: the GraphModule; every tensor node carries ``meta['tensor_meta']``.
        opaque: qualified name of each submodule kept opaque → why tracing it failed.
        example_args: the positional inputs, one per placeholder, used for shapes.
        user_module_ids: when the graph module holds a copy of the model, the ids of the
            model's own modules (a copy may share some: see ``copy_module``); None when it
            holds the model's layers themselves.
    """

    graph_module: fx.GraphModule
    opaque: dict[str, str] = field(default_factory=dict)
    example_args: tuple[Any, ...] = ()
    user_module_ids: frozenset[int] | None = None
    _modules: dict[str, nn.Module] | None = field(default=None, repr=False, compare=False)

    def modules(self) -> dict[str, nn.Module]:
        """Every module of the graph module by path, shared ones under each of their paths
        (``named_modules(remove_duplicate=False)``), walked once: the passes after tracing
        all look layers up by path. Read-only; it describes the graph module as traced."""
        if self._modules is None:
            self._modules = dict(self.graph_module.named_modules(remove_duplicate=False))
        return self._modules


class FxRazorTracer(fx.Tracer):
    """A tracer whose leaves are torch.nn layers, user leaves and opaque modules."""

    def __init__(self, leaf_types: tuple[type, ...] = (), leaf_names: Iterable[str] = (),
                 known_layers: Mapping[type, Any] | None = None,
                 expand_block: BlockExpander | None = None):
        super().__init__(autowrap_functions=leaf_functions())
        self.leaf_types = leaf_types
        self.leaf_names = set(leaf_names)
        self.known_layers = known_layers or {}
        # choice blocks traced branch by branch (see fxrazor.trace.blocks); the stack holds
        # the (block path, branch name) being traced, written into each node's meta
        self.expand_block = expand_block
        self.branch_stack: list[tuple[str, str]] = []

    def trace(self, root: nn.Module | Any, concrete_args: dict[str, Any] | None = None
              ) -> fx.Graph:
        # A module with a plain forward is traced with a faster walk for fx's tensor map
        # (see fxrazor.trace.module_trace); anything else, and torches without the helpers, go
        # to fx, which also says what is wrong with a forward it cannot trace.
        if module_trace.AVAILABLE and isinstance(root, nn.Module) and isinstance(
                getattr(type(root), self.traced_func_name, None), types.FunctionType):
            return module_trace.trace_module(self, root, concrete_args)
        return super().trace(root, concrete_args)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_names:
            return True
        if type(m) in TRACED_TORCH_BLOCKS:  # fx keeps every torch.nn module whole
            return False
        if self.leaf_types and isinstance(m, self.leaf_types):
            return True
        if lookup_by_type(self.known_layers, m) is not None:
            return True  # e.g. a Conv3d subclass that keeps Conv3d's forward
        return super().is_leaf_module(m, module_qualified_name)

    def create_node(self, kind: str, target: Any, args: tuple[Any, ...],
                    kwargs: dict[str, Any], name: str | None = None,
                    type_expr: Any | None = None) -> fx.Node:
        # The base class also copies the module call stack, scope and (for nested tracing)
        # preserved metadata into every node: about a fifth of the trace, and nothing here
        # reads them. The arguments are set after the node is made: ``Graph.create_node``
        # walks them with pytree looking for raw SymInts to warn about, which a symbolic
        # trace never produces, and the ``args``/``kwargs`` setters record the uses alone.
        if type(args) is not tuple or not isinstance(kwargs, dict):  # let fx check and say
            node = self.graph.create_node(kind, target, args, kwargs, name, type_expr)
        else:
            if name is None:
                name = _candidate_name(self.graph, target)
            node = self.graph.create_node(kind, target, None, None, name, type_expr)
            if args:
                node.args = args
            if kwargs:
                node.kwargs = kwargs
        if self.branch_stack:
            node.meta[BRANCH_KEY] = self.branch_stack[-1]
        return node

    def create_arg(self, a: Any) -> Any:
        # Fast paths for the arguments nearly every call has; anything else (tensors,
        # parameters, modules, named tuples, dicts, slices, ...) takes the base route.
        kind = type(a)
        if kind is fx.Proxy:
            return a.node
        if kind in _PLAIN_ARGS:
            return a
        if kind is tuple or kind is list:
            return kind([self.create_arg(item) for item in a])
        if kind is dict and all(type(key) is str for key in a):
            return {key: self.create_arg(value) for key, value in a.items()}
        return super().create_arg(a)

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        # As the base, without its module-stack and scope bookkeeping (see create_node).
        path = self.submodule_paths.get(m) if self.submodule_paths else None
        try:
            if path is None:
                path = self.path_of_module(m)
            # a choice block outside any other is traced branch by branch (one nested in a
            # branch stays a leaf); a block named a leaf, or whose call does not fit, too
            if (self.expand_block is not None and not self.branch_stack
                    and path not in self.leaf_names):
                branches = self.expand_block(m)
                if branches is not None:
                    joined = trace_block(self, m, path, branches, args, kwargs)
                    if joined is not None:
                        return joined
            if self.is_leaf_module(m, path):
                return self.create_proxy("call_module", path, args, kwargs)
            return forward(*args, **kwargs)
        except _TRACE_FAILURES as e:
            # The innermost module sees the exception first; remember it for the retry.
            if not hasattr(e, "_fxrazor_module"):
                e._fxrazor_module = path  # type: ignore[union-attr]
            raise


# (is a callable, text) -> fx's base name for a node of that target; bounded
_CANDIDATES: dict[tuple[bool, str], str] = {}
_MAX_CANDIDATES = 8192


def _candidate_name(graph: fx.Graph, target: Any) -> str | None:
    """``graph._target_to_str(target)``, the base of a new node's name (fx makes it
    unique), remembered by the target's text: fx lowercases it with two regular
    expressions for every node. None where fx must work it out itself."""
    if type(graph)._target_to_str is not fx.Graph._target_to_str:
        return None
    if isinstance(target, str):
        key = (False, target)
    elif callable(target) and isinstance(getattr(target, "__name__", None), str):
        key = (True, target.__name__)  # fx reads the name alone
    else:
        return None
    found = _CANDIDATES.get(key)
    if found is None:
        found = graph._target_to_str(target)
        if len(_CANDIDATES) >= _MAX_CANDIDATES:
            _CANDIDATES.clear()
        _CANDIDATES[key] = found
    return found


def _split_leaf_spec(leaf_modules: Iterable[type | str]) -> tuple[tuple[type, ...], set[str]]:
    types, names = [], set()
    for item in leaf_modules:
        if isinstance(item, type) and issubclass(item, nn.Module):
            types.append(item)
        elif isinstance(item, str):
            names.add(item)
        else:
            raise UnsupportedModelError(
                f"leaf_modules entries must be nn.Module subclasses or qualified module "
                f"names, got {item!r}"
            )
    return tuple(types), names


def absent_inputs(model: nn.Module, example_inputs: Any) -> dict[str, Any]:
    """Forward arguments that the example inputs leave out, with their defaults: they are
    traced as constants, so ``if y is not None:`` takes the branch the defaults take."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    named = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                             p.KEYWORD_ONLY)]
    if isinstance(example_inputs, dict):
        given = set(example_inputs)
    else:
        count = len(example_inputs) if isinstance(example_inputs, (tuple, list)) else 1
        given = {p.name for p in named[:count]}
    return {p.name: p.default for p in named
            if p.name not in given and p.default is not p.empty}


def _trace_with_fallback(
    model: nn.Module, leaf_types: tuple[type, ...], leaf_names: set[str],
    known_layers: Mapping[type, Any], concrete_args: dict[str, Any] | None = None,
    expand_block: BlockExpander | None = None,
) -> tuple[fx.GraphModule, dict[str, str]]:
    opaque: dict[str, str] = {}
    for _ in range(_MAX_RETRIES):
        tracer = FxRazorTracer(leaf_types, leaf_names | set(opaque), known_layers,
                               expand_block)
        try:
            # a Function's call is kept whole until the graph module holds its class
            with mha_fastpath_disabled(), keep_autograd_functions(tracer, model):
                graph = tracer.trace(model, concrete_args=concrete_args or None)
                # containers take the model's mode; its layers keep theirs, as in the model
                gm = build_graph_module(tracer.root, graph, type(model).__name__,
                                        containers_follow_root=True)
        except _TRACE_FAILURES as e:
            name = getattr(e, "_fxrazor_module", "")
            if not name or name in opaque:
                raise TraceFailedError(
                    f"cannot trace {type(model).__name__}: {type(e).__name__}: {e}. The "
                    f"failing code is in the top-level forward, so no submodule can be made "
                    f"opaque; move it into a submodule or pass leaf_modules=[...]."
                ) from e
            opaque[name] = f"untraceable ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
            logger.info("tracing %s failed; keeping it as an opaque leaf", name)
            continue
        return gm, opaque
    raise TraceFailedError(f"gave up tracing after {_MAX_RETRIES} opaque submodules")


def normalize_inputs(gm: fx.GraphModule, example_inputs: Any) -> tuple[Any, ...]:
    """Turn a tensor, a tuple of positional inputs or a dict of keyword inputs into one
    positional argument per placeholder of ``gm`` (placeholders absent from a dict take
    their default value)."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if isinstance(example_inputs, dict):
        args = []
        for node in placeholders:
            name = node.target.lstrip("*")
            if name in example_inputs:
                args.append(example_inputs[name])
            elif node.args:
                args.append(node.args[0])
            else:
                raise ExampleInputError(
                    f"example_inputs has no value for the model input {name!r} "
                    f"(given: {sorted(example_inputs)})"
                )
        unknown = set(example_inputs) - {n.target.lstrip("*") for n in placeholders}
        if unknown:
            raise ExampleInputError(f"example_inputs names unknown model inputs {sorted(unknown)}")
        return tuple(args)
    if isinstance(example_inputs, (tuple, list)):
        args = list(example_inputs)
        for node in placeholders[len(args):]:
            if not node.args:
                raise ExampleInputError(
                    f"the model takes {len(placeholders)} inputs but example_inputs gives "
                    f"{len(example_inputs)}; {node.target!r} has no default"
                )
            args.append(node.args[0])
        return tuple(args)
    raise ExampleInputError(
        "example_inputs must be a tensor, a tuple of positional inputs or a dict of keyword "
        f"inputs, got {type(example_inputs).__name__}"
    )


def trace_model(
    model: nn.Module,
    example_inputs: Any,
    leaf_modules: Iterable[type | str] = (),
    copy_model: bool = True,
    layers: Mapping[type, KnownLayer] | None = None,
    expand_block: BlockExpander | None = None,
) -> TracedModel:
    """Trace ``model`` and record shapes; the result owns copies of the model's state
    unless ``copy_model`` is False.

    Args:
        model: the model; it is never modified.
        example_inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs.
        leaf_modules: module types or qualified names to keep as single nodes.
        copy_model: give the result its own copy of every layer and weight it uses.
        layers: the known layer types (``fxrazor.layers.LAYERS`` in ``convert``): they and
            subclasses that keep their forward stay leaves, and their output shapes come
            from their records' formulas. None: torch.fx's leaves, shapes run on meta.
        expand_block: says which modules are choice blocks to trace branch by branch
            (see :mod:`fxrazor.trace.blocks`); None: none are.

    Returns:
        The traced model with ``tensor_meta`` on every node.
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(
            f"expected a torch.nn.Module, got {type(model).__name__}; wrap functions in a Module"
        )
    leaf_types, leaf_names = _split_leaf_spec(leaf_modules)
    user_ids: set[int] = set()
    source = copy_module(model, user_ids) if copy_model else model
    # fused layers become traceable ones in the model that is traced (convert_'s is the
    # user's own, as it documents); the only place decomposition runs before tracing
    decompose_modules(source)
    absent = absent_inputs(model, example_inputs)
    known = layers or {}
    gm, opaque = _trace_with_fallback(source, leaf_types, leaf_names, known, absent,
                                      expand_block)
    # the model's own argument names and annotations, its defaulted ones guarded
    restore_signature(gm, model.forward, absent, type(model).__name__)
    args = normalize_inputs(gm, example_inputs)
    propagate_shapes(gm, args, {t: r.meta_shape for t, r in known.items()
                                if r.meta_shape is not None})
    return TracedModel(gm, opaque, args, frozenset(user_ids) if copy_model else None)
