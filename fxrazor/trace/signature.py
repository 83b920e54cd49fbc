"""Give a traced graph the model's forward signature back.

A forward argument the example inputs leave out is traced at its default value (see
``absent_inputs``): ``if mask is not None:`` takes the branch the default takes, and a
default scale is baked into the graph as a constant. torch.fx marks such an argument as
*specialised*: it renames its placeholder (``scale`` becomes ``scale_1``) and checks it
with code TorchScript rejects (an unannotated float default, ``_assert_is_none(value:
object)``). :func:`restore_signature` gives every placeholder the model's name and
annotation back and replaces fx's check by a guard of this module: calling with the
default (or leaving the argument out) works, any other value raises an
:class:`~fxrazor.errors.InvalidArgumentError` naming the argument, and the guards script
and export (their ``value`` is typed, and a constant under ``torch.export``).

The specialised arguments of a graph are listed in ``graph_module.meta["specialized_args"]``
(``{name: default}``), so that a summary can say what was baked in.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fxrazor.trace.tracer import trace_model
    >>> class Net(nn.Module):
    ...     def forward(self, x, scale: float = 1.0):
    ...         return x * scale
    >>> gm = trace_model(Net(), torch.ones(1)).graph_module
    >>> gm(torch.ones(1))  # (the graph module writes its code on its first call)
    tensor([1.])
    >>> import inspect; str(inspect.signature(gm.forward))
    '(x, scale: float = 1.0)'
    >>> gm(torch.ones(1), 2.0)
    Traceback (most recent call last):
    ...
    fxrazor.errors.InvalidArgumentError: Net.forward was converted with scale=1.0 ...
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, Optional  # noqa: UP035 - TorchScript reads the guards' annotations

import torch
from torch import Tensor, fx
from torch.overrides import handle_torch_function, has_torch_function

from fxrazor.errors import InvalidArgumentError

__all__ = ["restore_signature", "check_none", "check_bool", "check_int", "check_float",
           "check_str", "SPECIALIZED_KEY"]

logger = logging.getLogger(__name__)

#: ``graph_module.meta`` key of the specialised arguments, ``{name: default}``.
SPECIALIZED_KEY = "specialized_args"


# The guards below run in three worlds: eager Python, TorchScript (which compiles them, so
# every annotation is a TorchScript type and they use no Python-only construct outside
# the ``is_scripting`` branch) and fx's re-trace when a GraphModule is unpickled (their
# ``value`` is then a Proxy, which records the call as a node again, as torch._assert does).
def check_none(value: Optional[Tensor], message: str) -> None:  # noqa: UP045
    """Raise ``InvalidArgumentError(message)`` unless ``value`` is None."""
    if not torch.jit.is_scripting():
        if type(value) is not Tensor and value is not None and has_torch_function((value,)):
            return handle_torch_function(check_none, (value,), value, message)  # type: ignore[no-any-return]
    if value is not None:
        raise InvalidArgumentError(message)


def check_bool(value: bool, default: bool, message: str) -> None:
    """Raise ``InvalidArgumentError(message)`` unless ``value == default``."""
    if not torch.jit.is_scripting():
        if type(value) is not bool and has_torch_function((value,)):
            return handle_torch_function(check_bool, (value,), value, default, message)  # type: ignore[no-any-return]
    if value != default:
        raise InvalidArgumentError(message)


def check_int(value: int, default: int, message: str) -> None:
    """Raise ``InvalidArgumentError(message)`` unless ``value == default``."""
    if not torch.jit.is_scripting():
        if type(value) is not int and has_torch_function((value,)):
            return handle_torch_function(check_int, (value,), value, default, message)  # type: ignore[no-any-return]
    if value != default:
        raise InvalidArgumentError(message)


def check_float(value: float, default: float, message: str) -> None:
    """Raise ``InvalidArgumentError(message)`` unless ``value == default``."""
    if not torch.jit.is_scripting():
        if type(value) not in (float, int) and has_torch_function((value,)):
            return handle_torch_function(check_float, (value,), value, default, message)  # type: ignore[no-any-return]
    if value != default:
        raise InvalidArgumentError(message)


def check_str(value: str, default: str, message: str) -> None:
    """Raise ``InvalidArgumentError(message)`` unless ``value == default``."""
    if not torch.jit.is_scripting():
        if type(value) is not str and has_torch_function((value,)):
            return handle_torch_function(check_str, (value,), value, default, message)  # type: ignore[no-any-return]
    if value != default:
        raise InvalidArgumentError(message)


_SCALAR_GUARDS: dict[type, Callable[..., None]] = {
    bool: check_bool, int: check_int, float: check_float, str: check_str}
# annotations check_none's Optional[Tensor] value accepts when TorchScript compiles the call
_OPTIONAL_TENSOR = (Optional[Tensor], Tensor)  # noqa: UP045


def _parameters(forward: Any) -> dict[str, inspect.Parameter]:
    """The named parameters of ``forward``, annotations evaluated where they can be (a
    string annotation that cannot be resolved is dropped: TorchScript could not read it)."""
    try:
        sig = inspect.signature(forward, eval_str=True)
    except (NameError, TypeError, SyntaxError, AttributeError):
        try:
            sig = inspect.signature(forward)
        except (TypeError, ValueError):
            return {}
    except ValueError:
        return {}
    named = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
             inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p for p in sig.parameters.values() if p.kind in named}


def _annotation(param: inspect.Parameter) -> Any:
    return None if param.annotation is param.empty or isinstance(param.annotation, str) \
        else param.annotation


def _drop_checks(node: fx.Node) -> None:
    """Erase fx's checks of a specialised placeholder (its only users: the traced code
    received the default value itself, not the placeholder)."""
    for user in list(node.users):
        _drop_checks(user)
        user.graph.erase_node(user)


def _guard(graph: fx.Graph, node: fx.Node, name: str, default: Any, annotation: Any,
           owner: str) -> Any:
    """Insert the guard of a specialised placeholder after it; returns the annotation the
    placeholder takes (the model's, else one TorchScript accepts for the default)."""
    message = (f"{owner}.forward was converted with {name}={default!r} (its default: the "
               f"example inputs did not give it), so the graph is specialised to that value; "
               f"leave {name} out or pass {default!r}, or give {name} in the example inputs "
               f"when converting to keep it an input")
    with graph.inserting_after(node):
        if default is None:
            annotation = Optional[Tensor] if annotation is None else annotation  # noqa: UP045
            if annotation in _OPTIONAL_TENSOR:
                graph.call_function(check_none, (node, message))
            else:  # e.g. Optional[int]: no guard TorchScript could type; fx's check stays
                graph.call_function(fx._symbolic_trace._assert_is_none, (node, message))
            return annotation
        kind = annotation if annotation in _SCALAR_GUARDS else type(default)
        guard = _SCALAR_GUARDS.get(kind)
        if guard is None:
            logger.info("%s.forward: %s=%r is baked into the graph unchecked", owner, name,
                        default)
            return annotation
        graph.call_function(guard, (node, default, message))
        return kind if annotation is None else annotation


def restore_signature(gm: fx.GraphModule, forward: Any, specialized: Mapping[str, Any],
                      owner: str) -> None:
    """Rename ``gm``'s placeholders back to ``forward``'s parameters, give them its
    annotations (the return annotation stays fx's, unless a string), and guard the ``specialized`` ones (``{name: default}``);
    records them in ``gm.meta[SPECIALIZED_KEY]``. ``owner`` names the model in messages.
    """
    params = _parameters(forward)
    graph = gm.graph
    for node in [n for n in graph.nodes if n.op == "placeholder"]:
        target = str(node.target)
        name = target.lstrip("*")
        if name not in params:  # fx's ``<name>_<count>`` of a specialised argument
            base, _, count = name.rpartition("_")
            if base not in specialized or not count.isdigit():
                continue
            name = base
        annotation = _annotation(params[name])
        if name in specialized:
            _drop_checks(node)
            annotation = _guard(graph, node, name, specialized[name], annotation, owner)
        node.target = target[:len(target) - len(target.lstrip("*"))] + name
        if node.name != name:
            node._rename(name)  # codegen aliases the name should it be taken
        node.type = annotation
    output = next(n for n in reversed(graph.nodes) if n.op == "output")
    if isinstance(output.type, str):  # a name the generated code cannot resolve
        output.type = None
    gm.meta[SPECIALIZED_KEY] = dict(specialized)
    gm.recompile()
