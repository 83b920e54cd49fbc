"""Custom ``torch.autograd.Function`` calls kept as one call while tracing.

torch.fx would run a Function's ``forward`` on the proxies and record the ops inside it,
so the traced model would differentiate those ops instead of calling the Function's own
``backward``: gradients would change silently. While a model is traced, ``Function.apply``
on a traced value records one call instead: the Function class becomes an attribute of
the graph module (``fxr_autograd_<Name>``) and the node calls its ``apply`` method, so the
supernet and the frozen model run the Function itself, backward included, and the frozen
code holds no fxrazor type. The channel analysis pins what the call touches (its rule is
``fxrazor.rules.functions``'s ``apply`` method rule), naming the Function.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fxrazor.trace.tracer import trace_model
    >>> class Triple(torch.autograd.Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         return x.clone()
    ...     @staticmethod
    ...     def backward(ctx, g):
    ...         return 3 * g
    >>> class M(nn.Module):
    ...     def forward(self, x):
    ...         return Triple.apply(x)
    >>> gm = trace_model(M(), torch.ones(2)).graph_module
    >>> [n.op for n in gm.graph.nodes]
    ['placeholder', 'get_attr', 'call_method', 'output']
    >>> x = torch.ones(2, requires_grad=True); gm(x).sum().backward(); x.grad.tolist()
    [3.0, 3.0]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import fx, nn
from torch.utils._pytree import tree_leaves

__all__ = ["ATTR_PREFIX", "keep_autograd_functions", "is_kept_function_call"]

ATTR_PREFIX = "fxr_autograd_"


def is_kept_function_call(node: fx.Node) -> bool:
    """Whether ``node`` is a kept Function call (``<fxr_autograd_*>.apply(...)``)."""
    return (node.op == "call_method" and node.target == "apply" and bool(node.args)
            and isinstance(node.args[0], fx.Node) and node.args[0].op == "get_attr"
            and str(node.args[0].target).startswith(ATTR_PREFIX))


@contextlib.contextmanager
def keep_autograd_functions(tracer: fx.Tracer, root: nn.Module) -> Iterator[dict[str, type]]:
    """While the block runs, ``Function.apply`` on a value that ``tracer`` traces records
    one call; other calls run as usual. Yields ``{attribute name: Function class}``: the
    caller puts them on the graph module it builds (and they are taken off ``root`` when
    the block ends, so the user's model is left as it was)."""
    function_type = torch.autograd.Function
    original = function_type.__dict__["apply"]  # the class method itself (C or Python)
    kept: dict[str, type] = {}

    def apply(cls: type, *args: Any, **kwargs: Any) -> Any:
        leaves = tree_leaves((args, kwargs))
        if not any(isinstance(a, fx.Proxy) and a.tracer is tracer for a in leaves):
            return original.__get__(None, cls)(*args, **kwargs)
        name = next((k for k, v in kept.items() if v is cls), None)
        if name is None:
            name = f"{ATTR_PREFIX}{cls.__name__}"
            while name in kept or hasattr(root, name):
                name += "_"
            kept[name] = cls
            setattr(root, name, cls)  # get_attr reads it from the root while tracing
        owner = tracer.create_proxy("get_attr", name, (), {})
        return tracer.create_proxy("call_method", "apply", (owner, *args), kwargs)

    function_type.apply = classmethod(apply)  # type: ignore[method-assign, assignment]
    try:
        yield kept
    finally:
        function_type.apply = original  # type: ignore[method-assign]
        for name in kept:
            root.__dict__.pop(name, None)
