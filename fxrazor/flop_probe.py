"""FlopCounterMode's count of one graph call, run once on zeros of its traced argument
shapes: what the estimate plan asks of calls it does not model (see
:mod:`fxrazor.estimate_plan`).

Example:
    >>> import torch
    >>> torch_function(torch.matmul), torch_function(lambda x: x @ x)  # the lambda: a user's
    (True, False)
"""

from __future__ import annotations

import contextlib
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode

from fxrazor.errors import UnsupportedModelError
from fxrazor.trace.modes import evaluating
from fxrazor.trace.shapes import NUMBER_KEY

__all__ = ["counted", "sdpa_counted", "torch_function", "refuse"]


def refuse(node: fx.Node, why: str) -> UnsupportedModelError:
    """The error of a call that the estimate cannot count (to raise)."""
    return UnsupportedModelError(
        f"estimate cannot count node {node.format_node()}: {why}; freeze the subnet and "
        f"count it with torch.utils.flop_counter.FlopCounterMode instead")


def torch_function(fn: Any) -> bool:
    """Whether ``fn`` is torch's or Python's own (whose counted kernels the plan knows),
    not a user function kept whole in the graph."""
    module = getattr(fn, "__module__", None) or ""
    return module in ("", "_operator", "operator", "builtins", "math") or \
        module == "torch" or module.startswith(("torch.", "torch._"))


def sdpa_counted(node: fx.Node) -> bool:
    """Whether FlopCounterMode counts this attention call on its traced inputs."""
    return counted(node, F.scaled_dot_product_attention) > 0


def counted(node: fx.Node, call: Any) -> int:
    """FlopCounterMode's count of ``call`` on zeros of ``node``'s traced argument shapes."""
    def real(a: Any) -> Any:
        if isinstance(a, fx.Node) and NUMBER_KEY in a.meta:
            return a.meta[NUMBER_KEY]
        if isinstance(a, fx.Node):
            meta = a.meta.get("tensor_meta")
            if meta is None or not hasattr(meta, "shape"):
                raise refuse(node, f"no traced shape for argument {a}")
            return torch.zeros(meta.shape, dtype=meta.dtype)
        return a
    args = fx.node.map_aggregate(node.args, real)
    kwargs = fx.node.map_aggregate(node.kwargs, real)
    counter = FlopCounterMode(display=False)
    modes = evaluating(call) if isinstance(call, nn.Module) else contextlib.nullcontext()
    try:
        with torch.no_grad(), modes, counter:
            call(*cast(tuple, args), **cast(dict, kwargs))
    except Exception as e:  # noqa: BLE001 (any failure: the call cannot be counted here)
        raise refuse(node, f"it could not run on zeros of its traced shapes ({e})") from e
    return int(counter.get_total_flops())
