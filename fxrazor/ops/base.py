"""The dynamic-op protocol: a dynamic op *is* its static module, plus a selection of kept
positions per slot role, and turns back into a plain module with ``to_static()``.

A selection is ``None`` (keep everything: the forward is the static module's, no copy), a
``slice`` (a contiguous block: a view, no copy) or a LongTensor of kept positions.

Example:
    >>> import torch
    >>> take(torch.arange(6).view(2, 3), 1, slice(0, 2)).tolist()
    [[0, 1], [3, 4]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, cast, overload

import torch
from torch import nn

__all__ = ["DynamicOp", "Binding", "Selection", "take", "count", "retype"]

Selection = slice | torch.Tensor | None


@overload
def take(tensor: torch.Tensor, dim: int, sel: Selection) -> torch.Tensor: ...
@overload
def take(tensor: torch.Tensor | None, dim: int, sel: Selection) -> torch.Tensor | None: ...
def take(tensor: torch.Tensor | None, dim: int, sel: Selection) -> torch.Tensor | None:
    """Select positions ``sel`` of ``tensor`` along ``dim``."""
    if tensor is None or sel is None:
        return tensor
    if isinstance(sel, slice):
        return tensor.narrow(dim, sel.start, sel.stop - sel.start)
    return tensor.index_select(dim, sel.to(tensor.device))


def count(sel: Selection, full: int) -> int:
    """Number of positions kept by ``sel`` out of ``full``."""
    if sel is None:
        return full
    if isinstance(sel, slice):
        return sel.stop - sel.start
    return int(sel.numel())


def retype(module: nn.Module, cls: type[nn.Module]) -> nn.Module:
    """A new module object of class ``cls`` sharing ``module``'s state (no copy, no init)."""
    obj = cls.__new__(cls)
    state = dict(module.__dict__)
    for key in ("_parameters", "_buffers", "_modules"):
        state[key] = dict(state[key])
    obj.__dict__.update(state)
    return obj


@dataclass
class Binding:
    """A dynamic piece (op, parameter or size) and, per position of its ``role``'s dim, the
    global channel index it follows (the last index, always kept, for pinned positions)."""

    module: nn.Module
    role: str
    gidx: torch.Tensor


class DynamicOp:
    """Mixin of dynamic ops: a subclass of its static layer that slices the positions each
    role keeps. The roles a layer type has are its record's (``fxrazor.layers``); a role
    without a selection keeps every position."""

    static_type: ClassVar[type[nn.Module]]
    _fxr_sel: dict[str, Selection]  # role -> selection, set by the supernet

    @classmethod
    def from_static(cls, module: nn.Module) -> DynamicOp:
        """Wrap a static module (sharing its parameters) with full selections."""
        # subclasses combine this mixin with an nn.Module type
        op = cast(DynamicOp, retype(module, cast("type[nn.Module]", cls)))
        # a plain attribute: straight into __dict__, past nn.Module's parameter/buffer/
        # submodule checks (a few microseconds per layer of every conversion)
        op.__dict__["_fxr_sel"] = {}
        return op

    @classmethod
    def adopt(cls, module: nn.Module) -> DynamicOp | None:
        """Turn ``module`` itself into this op, with full selections: its class is
        swapped and nothing is copied. Only for a module that nobody else holds (convert's
        private copy of a layer). None where this op builds its own (``from_static`` is
        overridden) or the class cannot be swapped; then use ``from_static``.

        Example:
            >>> from torch import nn
            >>> from fxrazor.ops.conv import DynamicConv2d
            >>> conv = nn.Conv2d(2, 4, 1)
            >>> DynamicConv2d.adopt(conv) is conv, type(conv).__name__
            (True, 'DynamicConv2d')
        """
        own = getattr(cls.from_static, "__func__", None)  # (a staticmethod has none)
        if own is not DynamicOp.from_static.__func__:  # type: ignore[attr-defined]
            return None
        try:
            module.__class__ = cls  # type: ignore[assignment]
        except TypeError:  # an incompatible layout (e.g. __slots__)
            return None
        module.__dict__["_fxr_sel"] = {}
        return cast(DynamicOp, module)

    def set_selection(self, role: str, sel: Selection) -> None:
        self._fxr_sel[role] = sel

    def selection(self, role: str) -> Selection:
        return self._fxr_sel.get(role)

    @property
    def is_full(self) -> bool:
        return all(s is None for s in self._fxr_sel.values())

    def to_static(self) -> nn.Module:
        """A plain module of the static type with the current selection, weights copied."""
        static = retype(self, self.static_type)  # type: ignore[arg-type]
        del static.__dict__["_fxr_sel"]
        self._slice_into(static)
        for name, param in list(static._parameters.items()):
            if param is not None:
                data = param.detach().clone().contiguous()
                static._parameters[name] = nn.Parameter(data, param.requires_grad)
        for name, buf in list(static._buffers.items()):
            if buf is not None:
                static._buffers[name] = buf.detach().clone().contiguous()
        return static

    def _slice_into(self, static: Any) -> None:
        """Slice ``static``'s parameters/buffers and fix its size attributes."""
        raise NotImplementedError
