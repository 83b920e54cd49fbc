"""Shape propagation: record ``tensor_meta`` on every node of a traced graph.

Shapes are found on the meta device: every parameter and buffer is swapped for a meta
tensor of the same shape for the run, so no arithmetic is spent and nothing is allocated;
common layers and element-wise ops get their output shapes by formula, which is cheaper
still. Graphs with ops that need real values (data-dependent shapes), or inputs the meta run
rejects, run for real on the example inputs instead, in eval mode so that no BatchNorm
statistics move. A real failure names the node and module that rejected the
inputs and chains the original exception.

Example:
    >>> import torch
    >>> from torch import fx, nn
    >>> gm = fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    >>> propagate_shapes(gm, (torch.randn(1, 3, 8, 8),))
    >>> [tuple(n.meta["tensor_meta"].shape) for n in gm.graph.nodes if n.op == "call_module"]
    [(1, 4, 6, 6), (1, 4, 6, 6)]
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, overload

import torch
from torch import fx, nn
from torch.fx.node import map_aggregate, map_arg
from torch.fx.passes.shape_prop import _extract_tensor_metadata

from fxrazor.errors import ExampleInputError
from fxrazor.trace.meta_shapes import LayerShape, function_output, layer_output
from fxrazor.trace.modes import evaluating

__all__ = ["propagate_shapes", "NUMBER_KEY"]

logger = logging.getLogger(__name__)

#: ``node.meta`` key of the traced value of a node that computes a plain number (``C //
#: heads``, ``(C // heads) ** -0.5``): the analysis freezes such a value where it meets
#: tensors and is read from widths that pruning changes.
NUMBER_KEY = "fxr_number"


def _to_meta(value: Any) -> Any:
    return value.to("meta") if isinstance(value, torch.Tensor) else value


def _mutable(value: Any) -> Any:
    """Plain lists/dicts for fx's immutable argument containers: the generated code passes
    fresh lists, and some wrapped functions mutate theirs."""
    if isinstance(value, (list, tuple)):
        items = [_mutable(v) for v in value]
        return items if isinstance(value, list) else type(value)(items) \
            if not hasattr(value, "_fields") else type(value)(*items)
    if isinstance(value, dict):
        return {k: _mutable(v) for k, v in value.items()}
    return value


class _ShapeRecorder(fx.Interpreter):
    """Runs the graph and records ``tensor_meta`` (shape, dtype, stride) on every node.

    Unlike torch's ShapeProp it skips the memory-format queries (a third of its time on
    meta tensors, and nothing here reads them), prints nothing when a node fails, and
    remembers the failing node on the exception so that the error can name it."""

    def __init__(self, module: fx.GraphModule, garbage_collect_values: bool = True) -> None:
        super().__init__(module, garbage_collect_values=garbage_collect_values)
        # our error names the failing node; torch's decoration would append
        # "Original traceback: None" and a tlparse link to the user's message
        self.extra_traceback = False

    def run_node(self, n: fx.Node) -> Any:
        try:
            # Interpreter.run_node minus its per-node logging and node-context bookkeeping
            # (a third of the cost of a node whose output is only allocated).
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            result = getattr(self, n.op)(n.target, args, kwargs)
        except Exception as e:
            if not hasattr(e, "_fxrazor_node"):
                e._fxrazor_node = n  # type: ignore[attr-defined]
            raise
        found = False

        def record(value: Any) -> Any:
            nonlocal found
            if isinstance(value, torch.Tensor):
                found = True
                return _extract_tensor_metadata(value, include_contiguity=False)
            return value

        if type(result) in (int, float):
            n.meta[NUMBER_KEY] = result
            return result
        meta = map_aggregate(result, record)
        if found:
            n.meta["tensor_meta"] = meta
        return result

    def call_function(self, target: Any, args: Any, kwargs: Any) -> Any:
        return super().call_function(target, _mutable(args), _mutable(kwargs))


@overload
def _meta_like(tensor: nn.Parameter) -> nn.Parameter: ...
@overload
def _meta_like(tensor: torch.Tensor) -> torch.Tensor: ...
def _meta_like(tensor: torch.Tensor) -> torch.Tensor:
    meta = torch.empty_like(tensor, device="meta")
    return nn.Parameter(meta, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else meta


@contextmanager
def _on_meta(module: nn.Module) -> Iterator[None]:
    """Swap every parameter and buffer of ``module`` and its children for a meta tensor of
    the same shape for the duration (a tenth of ``functional_call``'s cost per layer)."""
    saved = []
    try:
        for mod in module.modules():
            saved.append((mod, mod._parameters, mod._buffers))
            mod._parameters = {k: None if v is None else _meta_like(v)
                               for k, v in mod._parameters.items()}
            mod._buffers = {k: None if v is None else _meta_like(v)
                            for k, v in mod._buffers.items()}
        yield
    finally:
        for mod, params, buffers in saved:
            mod._parameters, mod._buffers = params, buffers


class _MetaShapeRecorder(_ShapeRecorder):
    """Shape recording where layers and attributes run on meta copies of their tensors."""

    def __init__(self, module: fx.GraphModule, layer_shapes: Mapping[type, LayerShape]
                 ) -> None:
        # Meta values cost no memory: no need to free each after its last use (which
        # needs a walk over every node's inputs first).
        super().__init__(module, garbage_collect_values=False)
        self.layer_shapes = layer_shapes

    def run(self, *args: Any) -> Any:  # type: ignore[override]
        """``Interpreter.run`` without its progress bar, partial environments, freeing of
        values and error decoration (a failure here falls back to the real run, which
        has them); with the lookup below, 7% of recording mobilenet_v3_small's shapes."""
        args = self.graph.process_inputs(*args)
        self.env = env = {}
        self.args_iter = iter(args)
        for node in self.graph.nodes:
            env[node] = value = self.run_node(node)
            if node.op == "output":
                return self.graph.process_outputs(value)
        return None

    def fetch_args_kwargs_from_env(self, n: fx.Node) -> tuple[tuple[Any, ...], dict[str, Any]]:
        # the environment looked up directly: every input ran before (a graph is in order)
        load = self.env.__getitem__
        return map_arg(n.args, load), map_arg(n.kwargs, load)  # type: ignore[return-value]

    def fetch_attr(self, target: str) -> Any:
        return _to_meta(super().fetch_attr(target))

    def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
        # ``submodules`` names a shared layer once; any other name is found by its path
        module = self.submodules.get(target)
        if module is None:
            module = super().fetch_attr(target)
        known = layer_output(module, args, kwargs, self.layer_shapes)
        if known is not None:
            return known
        with _on_meta(module):
            return module(*args, **kwargs)

    def call_function(self, target: Any, args: Any, kwargs: Any) -> Any:
        fast = function_output(target, args, kwargs)
        return fast if fast is not None else super().call_function(target, args, kwargs)

    def call_method(self, target: Any, args: Any, kwargs: Any) -> Any:
        fast = function_output(target, args, kwargs)
        return fast if fast is not None else super().call_method(target, args, kwargs)


def _propagate_meta(gm: fx.GraphModule, args: tuple[Any, ...],
                    layer_shapes: Mapping[type, LayerShape]) -> bool:
    try:
        with torch.no_grad():
            _MetaShapeRecorder(gm, layer_shapes).run(*(_to_meta(a) for a in args))
    except Exception as e:  # noqa: BLE001 - any failure falls back to the real run
        logger.debug("meta shape propagation failed (%s); running the model for real", e)
        return False
    return True


def _propagate_real(gm: fx.GraphModule, args: tuple[Any, ...]) -> None:
    try:
        with torch.no_grad():
            _ShapeRecorder(gm).run(*args)
    except Exception as e:  # noqa: BLE001 - re-raised below with the failing node named
        node = getattr(e, "_fxrazor_node", None)
        where = node.format_node() if node is not None else "the graph"
        module = f" (module {node.target!r})" if node is not None and \
            node.op == "call_module" else ""
        raise ExampleInputError(
            f"the model failed on the example inputs at {where}{module}: "
            f"{type(e).__name__}: {e}. Check the example inputs' shapes and dtypes."
        ) from e


def propagate_shapes(gm: fx.GraphModule, args: tuple[Any, ...],
                     layer_shapes: Mapping[type, LayerShape] | None = None) -> None:
    """Record ``node.meta['tensor_meta']`` for every node of ``gm`` run on ``args``.

    ``layer_shapes`` gives output-shape formulas by exact layer type (what the layer
    records hold); other layers run on meta tensors."""
    if _propagate_meta(gm, args, layer_shapes or {}):
        return
    if any(t.is_meta for t in (*gm.parameters(), *gm.buffers())):
        args = tuple(_to_meta(a) for a in args)
    with evaluating(gm):  # a real run must not move BatchNorm statistics
        _propagate_real(gm, args)
