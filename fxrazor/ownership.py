"""Give a traced graph its own copy of the model's state, cheaply.

``convert`` must never change the user's model, so the supernet needs its own weights.
Deep-copying the model before tracing costs a full copy in series with everything else.
Instead the weights are cloned on a worker thread (tensor copies release the GIL) while the
original model is traced; the traced graph's layers and attributes are then swapped for
copies that use the clones. Only the traced graph's own containers and copies are touched.

Example:
    >>> import torch
    >>> from torch import fx, nn
    >>> model = nn.Sequential(nn.Linear(2, 2))
    >>> cloner = ParallelClone(model)
    >>> gm = fx.symbolic_trace(model)
    >>> take_ownership(gm, cloner.result())
    >>> gm.get_submodule("0").weight is model[0].weight
    False
    >>> torch.equal(gm.get_submodule("0").weight, model[0].weight)
    True
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import torch
from torch import fx, nn

__all__ = ["ParallelClone", "take_ownership"]


def _clone(t: torch.Tensor) -> torch.Tensor:
    data = t.detach().clone()
    return nn.Parameter(data, t.requires_grad) if isinstance(t, nn.Parameter) else data


class ParallelClone:
    """Clones every parameter and buffer of ``model`` on a worker thread."""

    def __init__(self, model: nn.Module) -> None:
        self._tensors = [*model.parameters(), *model.buffers()]
        self._clones: dict[int, torch.Tensor] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for t in self._tensors:
                self._clones[id(t)] = _clone(t)
        except BaseException as e:  # noqa: BLE001 - re-raised in result()
            self._error = e

    def result(self) -> dict[int, torch.Tensor]:
        """``{id(original tensor): clone}``, once the worker is done."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._clones


def _set(root: nn.Module, target: str, value: Any) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, value)


def take_ownership(gm: fx.GraphModule, clones: dict[int, torch.Tensor]) -> None:
    """Replace every layer and attribute that ``gm``'s graph uses by a copy holding the
    clones (``{id(original): clone}``), so that ``gm`` shares no state with the model."""
    memo: dict[int, Any] = dict(clones)
    done: set[str] = set()
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target not in done:
            done.add(node.target)
            original = gm.get_submodule(node.target)
            if id(original) not in memo:  # a layer reachable under two names is copied once
                memo[id(original)] = copy.deepcopy(original, memo)
            _set(gm, node.target, memo[id(original)])
        elif node.op == "get_attr":
            owner, _, attr = node.target.rpartition(".")
            value = getattr(gm.get_submodule(owner) if owner else gm, attr)
            if isinstance(value, torch.Tensor):
                replacement = memo.get(id(value))
                if replacement is None:
                    replacement = memo[id(value)] = _clone(value)
                _set(gm, node.target, replacement)
