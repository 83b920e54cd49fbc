"""``fx.Tracer.trace`` of a module, with a faster walk for its tensor-attribute map.

Before tracing, ``fx.Tracer.trace`` walks every attribute of every module of the model to
map constant tensors to their attribute names (``tracer.tensor_attrs``), so that a tensor
met as an argument becomes a ``get_attr`` of its attribute instead of a new constant. Its
walk tests each attribute with ``isinstance`` against four types; that is about a sixth of
tracing a small CNN, where almost every attribute is a dict, a number or a tuple.
:func:`trace_module` does what ``trace`` does for a module root whose ``forward`` is a plain
function, and builds the same map, in the same order and at the same moment, but passes
over values of those plain types by their exact type first.

It uses torch.fx's own private patching helpers. Where this torch does not have them
(:data:`AVAILABLE` is False), the tracer uses ``fx.Tracer.trace`` itself; the tests check
both give the same graphs and maps on this torch.

Example:
    >>> from torch import fx, nn
    >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    >>> graph = trace_module(fx.Tracer(), model)
    >>> [(n.op, n.target) for n in graph.nodes][1:3]
    [('call_module', '0'), ('call_module', '1')]
"""

from __future__ import annotations

import functools
import inspect
from collections import OrderedDict
from typing import Any

from torch import fx, nn

__all__ = ["AVAILABLE", "trace_module"]

try:
    from torch.fx import _symbolic_trace as _st
    from torch.fx._lazy_graph_module import _LazyGraphModule

    _PRIVATE: tuple[Any, ...] | None = (
        _st._new_patcher, _st._patch_wrapped_functions, _st._autowrap_check,
        _st._orig_module_call, _st._orig_module_getattr, _st._set_is_fx_tracing,
        _st._get_is_fx_tracing, _st._constant_attribute_types)
except (ImportError, AttributeError):  # pragma: no cover - older torch: fx's own trace
    _PRIVATE = None

#: Whether :func:`trace_module` can run on this torch.
AVAILABLE = _PRIVATE is not None
# the attribute types fx maps to their names (tensors, script objects, tree specs)
_CONSTANT_TYPES: tuple[type, ...] = _PRIVATE[7] if _PRIVATE is not None else ()

# Exact types of the attributes modules mostly hold, none of them a constant fx maps
# (tensors, script objects, tree specs): their values skip the isinstance test.
_PLAIN = frozenset({dict, OrderedDict, set, list, tuple, bool, int, float, str, type(None)})


def _tensor_attrs(module: nn.Module, prefix: str, found: dict[Any, str]) -> None:
    """fx's walk: a module's attributes first, then its children (each once per parent,
    as ``named_children``), a later name of a value replacing an earlier one."""
    for name, value in module.__dict__.items():
        if type(value) not in _PLAIN and isinstance(value, _CONSTANT_TYPES):
            found[value] = prefix + name
    seen: set[nn.Module] = set()
    for name, child in module._modules.items():
        if child is not None and child not in seen:
            seen.add(child)
            _tensor_attrs(child, f"{prefix}{name}.", found)


def trace_module(tracer: fx.Tracer, root: nn.Module,
                 concrete_args: dict[str, Any] | None = None) -> fx.Graph:
    """``tracer.trace(root, concrete_args)`` for a module ``root`` whose ``forward`` (the
    tracer's ``traced_func_name``) is a plain function. Requires :data:`AVAILABLE`."""
    (new_patcher, patch_wrapped, autowrap_check, orig_call, orig_getattr, set_tracing,
     get_tracing, _) = _PRIVATE  # type: ignore[misc]  # (callers check AVAILABLE)
    # The patcher holds the wrappers below and they need the patcher: it is held in a
    # list emptied afterwards, not in a closure cell, so that no reference cycle keeps the
    # tracer, and with it the traced copy of the model, alive until a collection.
    current: list[Any] = []
    patched: list[type] = []  # classes given the wrappers, see _own_lookup_classes
    was_tracing = get_tracing()
    set_tracing(True)
    try:
        # a lazy GraphModule root must have its code before its forward is traced
        _LazyGraphModule.force_recompile(root)  # type: ignore[arg-type]
        tracer.root = root
        fn = getattr(type(root), tracer.traced_func_name)
        tracer.root_module_name = root._get_name()
        tracer.submodule_paths = {mod: name for name, mod in root.named_modules()}
        tracer.graph = fx.Graph(tracer_cls=type(tracer))
        code = fn.__code__
        tracer.graph._co_fields = {"co_name": code.co_name, "co_filename": code.co_filename,
                                   "co_firstlineno": code.co_firstlineno}
        tracer.tensor_attrs = {}
        _tensor_attrs(root, "", tracer.tensor_attrs)
        fn_globals = fn.__globals__  # read before patching
        fn, args = tracer.create_args_for_root(fn, True, concrete_args)
        proxy_cache: dict[str, Any] = {}

        @functools.wraps(orig_getattr)
        def module_getattr(mod: nn.Module, attr: str) -> Any:
            return tracer.getattr(attr, orig_getattr(mod, attr), proxy_cache)

        @functools.wraps(orig_call)
        def module_call(mod: nn.Module, *args: Any, **kwargs: Any) -> Any:
            def forward(*args: Any, **kwargs: Any) -> Any:
                return orig_call(mod, *args, **kwargs)

            autowrap_check(current[0], getattr(getattr(mod, "forward", mod), "__globals__", {}),
                           tracer._autowrap_function_ids)
            return tracer.call_module(mod, forward, args, kwargs)

        with new_patcher() as patcher:
            current.append(patcher)
            classes = _own_lookup_classes(tracer.submodule_paths)
            if classes is None:
                patcher.patch_method(nn.Module, "__getattr__", module_getattr,
                                     deduplicate=False)
                patcher.patch_method(nn.Module, "__call__", module_call, deduplicate=False)
            else:
                _patch_classes(classes, module_getattr, module_call, patched)
            patch_wrapped(patcher)
            autowrap_check(patcher, fn_globals, tracer._autowrap_function_ids)
            for module in tracer._autowrap_search:
                autowrap_check(patcher, module.__dict__, tracer._autowrap_function_ids)
            returns = inspect.get_annotations(inspect.unwrap(fn)).get("return", None)
            tracer.create_node("output", "output", (tracer.create_arg(fn(*args)),), {},
                               type_expr=returns)
        tracer.submodule_paths = None
    except RuntimeError as e:
        # as fx: a data-dependent failure carries the graph traced so far
        if e.args and isinstance(e.args[0], str) and "data-dependent" in e.args[0]:
            e.partial_fx_graph = tracer.graph.python_code(  # type: ignore[attr-defined]
                root_module="self", verbose=True).src
        raise
    finally:
        current.clear()
        _unpatch_classes(patched)
        set_tracing(was_tracing)
    return tracer.graph


def _own_lookup_classes(modules: dict[nn.Module, str]) -> list[type] | None:
    """The classes of the model's modules, where patching them is equivalent to patching
    ``nn.Module`` as fx does: None when a class defines its own ``__call__`` or
    ``__getattr__`` below ``nn.Module`` (a ``super()`` call from it must reach the
    tracer's wrapper on ``nn.Module`` itself).

    Why not patch ``nn.Module``: assigning a special method on a class updates every
    subclass, and a process with torchvision loaded has hundreds (thousands with other
    model libraries); four such assignments per trace cost more than all of them on the
    dozen classes of a model."""
    classes = list({type(m): None for m in modules})
    for cls in classes:
        for base in cls.__mro__:
            if base is nn.Module:
                break
            if "__call__" in base.__dict__ or "__getattr__" in base.__dict__:
                return None
    return classes


def _patch_classes(classes: list[type], getattr_fn: Any, call_fn: Any,
                   patched: list[type]) -> None:
    for cls in classes:
        patched.append(cls)  # before the assignments: a failure still removes both
        setattr(cls, "__getattr__", getattr_fn)  # noqa: B010 - a class, not an instance
        setattr(cls, "__call__", call_fn)  # noqa: B010


def _unpatch_classes(patched: list[type]) -> None:
    """Remove the wrappers again: the classes inherit nn.Module's methods as before."""
    while patched:
        cls = patched.pop()
        for name in ("__call__", "__getattr__"):
            if name in cls.__dict__:
                delattr(cls, name)
