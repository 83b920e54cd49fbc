"""A private copy of a model whose weights are copied only when either side writes them.

``convert`` must never modify the user's model, so it works on a copy. A plain
``copy.deepcopy`` of a ResNet-50 spends most of its time allocating and filling 100 MB of
fresh memory that the supernet may only ever read. Here each CPU parameter and buffer is
cloned lazily (copy-on-write storage): the copy and the original read the same memory
until one of them is written (an optimizer step, a BatchNorm statistics update, an in-place
edit), and that write copies the data first, so neither side ever sees the other's change.

Tensors where copy-on-write could change behaviour are deep-copied as before: storages
shared between several tensors (views of one flat buffer keep sharing in the copy),
shared-memory tensors (they must stay shared with other processes), tensors off the CPU,
tensor subclasses, quantized and non-strided tensors.

Example:
    >>> import torch
    >>> from torch import nn
    >>> layer = nn.Linear(4, 2)
    >>> twin = copy_module(layer)
    >>> torch.equal(twin.weight, layer.weight) and twin.weight is not layer.weight
    True
    >>> with torch.no_grad():
    ...     _ = twin.weight.zero_()
    >>> bool(layer.weight.abs().sum() > 0)
    True
"""

from __future__ import annotations

import copy
import copyreg
import weakref
from collections import Counter, OrderedDict
from typing import Any

import torch
from torch import nn

__all__ = ["copy_module"]

_lazy_clone = getattr(torch, "_lazy_clone", None)


def _lazily_clonable(tensor: torch.Tensor, storage: torch.UntypedStorage) -> bool:
    # ``is_cpu`` and the storage's ``is_shared`` answer as ``device.type`` and
    # ``Tensor.is_shared`` do, at a fraction of their cost (the latter builds a typed storage)
    return (type(tensor) in (torch.Tensor, nn.Parameter)
            and tensor.is_cpu
            and not storage.is_shared())


def _module_tensors(module: nn.Module, seen: set[int]) -> dict[int, torch.Tensor]:
    """Every parameter and buffer of ``module`` and its submodules, by id: what
    ``parameters()`` and ``buffers()`` yield, from one walk of the module tree. ``seen``
    receives the id of every module of the tree."""
    found: dict[int, torch.Tensor] = {}
    stack = [module]
    while stack:
        mod = stack.pop()
        if id(mod) in seen:
            continue
        seen.add(id(mod))
        for tensors in (mod._parameters, mod._buffers):
            for tensor in tensors.values():
                if tensor is not None:
                    found[id(tensor)] = tensor
        stack.extend(child for child in mod._modules.values() if child is not None)
    return found


def _lazy_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A copy-on-write clone with the tensor's type and ``requires_grad`` (call under
    ``torch.no_grad()``: the clone is then a leaf without a grad_fn)."""
    data = _lazy_clone(tensor)  # type: ignore[misc]
    if isinstance(tensor, nn.Parameter):
        return nn.Parameter(data, tensor.requires_grad)
    return data.requires_grad_(tensor.requires_grad)


def copy_module(module: nn.Module, source_ids: set[int] | None = None) -> nn.Module:
    """A deep copy of ``module`` whose CPU weights are copied on first write.

    Args:
        module: the module to copy; its values never change, and later writes to either
            module are not seen by the other.
        source_ids: if given, receives the id of every module of ``module``'s tree: a
            module of the copy with one of these ids was shared, not copied (a custom
            ``__deepcopy__`` may return a submodule itself).

    Returns:
        An independent copy, equal to ``copy.deepcopy(module)`` in every observable way
        except that untouched weights share memory with ``module`` until written.
    """
    tensors = _module_tensors(module, set() if source_ids is None else source_ids)
    memo: dict[int, Any] = {}
    if _lazy_clone is None or not tensors:
        return _deepcopy(module, memo)
    users: Counter[int] = Counter()  # tensors per storage
    clonable = []
    for tensor in tensors.values():
        if tensor.layout == torch.strided and not tensor.is_quantized and not tensor.is_meta:
            storage = tensor.untyped_storage()
            # The StorageImpl address: tensors viewing one storage share it (no data
            # pointer read, which would force a pending copy-on-write to happen).
            key = storage._cdata
            users[key] += 1
            if _lazily_clonable(tensor, storage):
                clonable.append((tensor, key))
    with torch.no_grad():  # the copies are leaves, as detached ones would be
        for tensor, key in clonable:
            if users[key] == 1:
                memo[id(tensor)] = _lazy_copy(tensor)
    return _deepcopy(module, memo)


# Values that deepcopy returns as they are.
_ATOMIC = frozenset({int, float, bool, complex, str, bytes, type(None), type, range,
                     torch.dtype, torch.device, torch.layout, torch.memory_format, torch.Size})


_MODULE_SETSTATE = nn.Module.__setstate__

# Weak keys: GraphModules make one class per instance, which must not be kept alive here.
_PLAIN: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def _plain_module_type(cls: type) -> bool:
    """A module type that ``copy.deepcopy`` copies through its ``__dict__`` alone."""
    known = _PLAIN.get(cls)
    if known is None:
        known = _PLAIN[cls] = _check_plain(cls)
    return known


def _check_plain(cls: type) -> bool:
    return (getattr(cls, "__deepcopy__", None) is None
            and cls.__reduce_ex__ is object.__reduce_ex__
            and cls.__reduce__ is object.__reduce__
            and getattr(cls, "__getstate__", None) is nn.Module.__getstate__
            and cls.__new__ is object.__new__
            and cls not in copyreg.dispatch_table
            and not copyreg._slotnames(cls))  # type: ignore[attr-defined]


def _deepcopy(value: Any, memo: dict[int, Any]) -> Any:
    """``copy.deepcopy(value, memo)``, done directly for what module trees are made of
    (plain modules, dicts, lists, tuples, sets, atoms): the generic protocol costs about
    ten times more per object, which adds up over the thousands of objects of a model.
    Anything else goes to ``copy.deepcopy`` with the same memo."""
    cls = type(value)
    if cls in _ATOMIC:
        return value
    found = memo.get(id(value), memo)
    if found is not memo:
        return found
    if cls in (dict, OrderedDict):
        new: Any = cls()
        memo[id(value)] = new
        for k, v in value.items():  # most are empty: a module's hook registries
            new[_deepcopy(k, memo)] = _deepcopy(v, memo)
    elif cls is list:
        if _ATOMIC.issuperset(map(type, value)):  # e.g. a conv's padding list
            new = memo[id(value)] = value.copy()
            return new
        new = memo[id(value)] = []
        new.extend(_deepcopy(v, memo) for v in value)
    elif cls is tuple:
        if _ATOMIC.issuperset(map(type, value)):
            return value
        items = tuple(_deepcopy(v, memo) for v in value)
        new = value if all(a is b for a, b in zip(items, value, strict=True)) else items
        memo[id(value)] = new
    elif cls in (set, frozenset) and all(type(v) in _ATOMIC for v in value):
        new = memo[id(value)] = value if cls is frozenset else set(value)
    elif isinstance(value, nn.Module) and _plain_module_type(cls):
        new = memo[id(value)] = object.__new__(cls)
        state = value.__dict__  # what nn.Module.__getstate__ gives, less a compiled forward
        if "_compiled_call_impl" in state:
            state = {k: v for k, v in state.items() if k != "_compiled_call_impl"}
        state = _copy_state(state, memo)
        if cls.__setstate__ is _MODULE_SETSTATE:
            # nn.Module's own only fills attributes that modules pickled by old torch
            # versions lack; ``value`` is a live module and has them
            new.__dict__.update(state)
        else:
            new.__setstate__(state)
    else:
        return copy.deepcopy(value, memo)
    # No keep-alive list (deepcopy's guard against reused ids): everything visited here is
    # reachable from the module being copied, which outlives the copy.
    return new


# The dicts and sets ``nn.Module.__init__`` gives every module (hook registries, the
# non-persistent buffer names, ...): each module owns its own, never shared with another.
_OWN_REGISTRIES = frozenset(k for k, v in nn.Module().__dict__.items()
                            if type(v) in (dict, OrderedDict, set))


def _copy_state(state: dict[str, Any], memo: dict[int, Any]) -> dict[str, Any]:
    """A module's copied ``__dict__``. Inlines the commonest cases: atoms, and the empty
    registries every module owns (a fresh empty one each, not memoised: one module's are
    never another's)."""
    out = state.copy()  # atoms stay as they are
    for k, v in state.items():  # (mostly a dozen registries, so these are tested first)
        cls = type(v)
        if cls is OrderedDict or cls is dict:
            out[k] = cls() if not v and k in _OWN_REGISTRIES else _copy_registry(v, memo)
        elif cls in _ATOMIC:
            continue
        elif cls is set and not v and k in _OWN_REGISTRIES:
            out[k] = set()
        elif cls is tuple and _ATOMIC.issuperset(map(type, v)):
            continue  # (deepcopy returns a tuple of atoms itself too)
        else:
            out[k] = _deepcopy(v, memo)
    return out


_MISSING = object()


def _copy_registry(value: dict[Any, Any], memo: dict[int, Any]) -> dict[Any, Any]:
    """``_deepcopy`` of a dict (mostly a module's parameters, buffers or children), with
    the memo looked up inline: most values are weights cloned beforehand or modules
    already copied."""
    found = memo.get(id(value), _MISSING)
    if found is not _MISSING:
        return found
    new = memo[id(value)] = type(value)()
    for k, v in value.items():
        copied = memo.get(id(v), _MISSING)
        new[k if type(k) is str else _deepcopy(k, memo)] = \
            _deepcopy(v, memo) if copied is _MISSING else copied
    return new
