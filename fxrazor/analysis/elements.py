"""Channel elements: the algebra behind channel-dependency discovery.

Every dimension of every tensor in the graph is a list of *elements*. Layers create
elements (a conv's output channels, a parameter's rows); ops relate the elements of their
inputs and outputs. Two elements that must be kept or removed together are *joined*; an
element that must never be removed is *pinned*. A tensor dimension that carries no
prunable elements (batch, height, a model input's channels) is *inert*: joining it with a
prunable dimension pins that dimension's elements.

A :class:`TensorInfo` stores, per dimension, the element ids of that dimension (a 1-D int
array) or nothing when the dimension is inert. Joins are recorded as pairs of id arrays and
resolved at the end into connected components, vectorised with numpy, so that analysing a
large model costs a few array operations per node rather than Python work per channel.

Example:
    >>> space = ElementSpace()
    >>> a, b = space.fresh(3), space.fresh(3)
    >>> space.join(a, b)
    >>> space.pin(a[:1], "model output")
    >>> labels = space.components()
    >>> bool(labels[a[2]] == labels[b[2]]), bool(labels[a[0]] == labels[a[1]])
    (True, False)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "SymSize",
    "ElementSpace",
    "TensorInfo",
    "reshape_groups",
    "reshape_info",
    "broadcast_join",
    "permute_info",
    "connected_labels",
]


@dataclass
class ElementSpace:
    """Allocates element ids and records joins and pins between them."""

    size: int = 0
    _left: list[np.ndarray] = field(default_factory=list)
    _right: list[np.ndarray] = field(default_factory=list)
    pins: list[tuple[np.ndarray, str]] = field(default_factory=list)

    def fresh(self, n: int) -> np.ndarray:
        """Return ``n`` new element ids."""
        ids = np.arange(self.size, self.size + n, dtype=np.int64)
        self.size += n
        return ids

    def join(self, a: np.ndarray, b: np.ndarray) -> None:
        """Join ``a[i]`` with ``b[i]`` for every i (both arrays have the same length)."""
        if len(a) != len(b):
            raise ValueError(f"cannot join {len(a)} elements with {len(b)}")
        self._left.append(a)
        self._right.append(b)

    def pin(self, ids: np.ndarray, reason: str) -> None:
        """Mark ``ids`` as never removable, remembering why."""
        if len(ids):
            self.pins.append((ids, reason))

    def joined(self) -> tuple[np.ndarray, np.ndarray]:
        """Every join so far as two arrays: ``left[i]`` is joined with ``right[i]``."""
        if not self._left:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(self._left), np.concatenate(self._right)

    def components(self) -> np.ndarray:
        """Resolve joins: ``labels[e]`` is the smallest element id connected to ``e``."""
        return connected_labels(self.size, *self.joined())


def connected_labels(size: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected components of ``size`` nodes with edges ``left[i] - right[i]``:
    ``labels[v]`` is the smallest node connected to v.

    Example:
        >>> connected_labels(4, np.array([3, 1]), np.array([1, 2])).tolist()
        [0, 1, 1, 1]
    """
    labels = np.arange(size, dtype=np.int64)
    while True:
        ra, rb = labels[left], labels[right]
        differ = ra != rb
        if not differ.any():
            return labels
        hi = np.maximum(ra[differ], rb[differ])
        lo = np.minimum(ra[differ], rb[differ])
        np.minimum.at(labels, hi, lo)
        labels = _compress(labels)


def _compress(labels: np.ndarray) -> np.ndarray:
    while True:
        nxt = labels[labels]
        if np.array_equal(nxt, labels):
            return labels
        labels = nxt


@dataclass(frozen=True)
class SymSize:
    """An int computed in the graph from tensor sizes; ``prunable`` when some of those
    sizes are widths that pruning changes (then the int is no longer a constant)."""

    prunable: bool


@dataclass(frozen=True)
class TensorInfo:
    """The elements of a tensor's dimensions: ``axes[d]`` holds dimension d's element ids;
    a dimension missing from ``axes`` is inert."""

    shape: tuple[int, ...]
    axes: dict[int, np.ndarray] = field(default_factory=dict)
    # why an inert dim is inert, where the rule that made it knows (a model input, an op
    # that mixes along it): the layer that meets it names that cause in its pin, not itself
    why: dict[int, str] = field(default_factory=dict, compare=False)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def ids(self, dim: int) -> np.ndarray | None:
        """Element ids of ``dim`` (negative dims allowed), or None when it is inert."""
        return self.axes.get(dim % self.ndim) if self.ndim else None

    def with_axes(self, shape: tuple[int, ...], axes: dict[int, np.ndarray]) -> TensorInfo:
        """A new info of ``shape``; dims of size 1 keep their ids here and are pinned by the
        analysis once the rule returns (one channel cannot be removed)."""
        return TensorInfo(tuple(shape), dict(axes))

    def all_ids(self) -> list[np.ndarray]:
        return list(self.axes.values())


def not_prunable(info: TensorInfo, dim: int, layer: str) -> str:
    """The pin reason of ``layer``'s elements that meet inert dim ``dim`` of ``info``."""
    cause = info.why.get(dim % info.ndim) if info.ndim else None
    return f"{layer} (input is not prunable: {cause})" if cause else \
        f"{layer} (input is not prunable)"


def join_dim(space: ElementSpace, ids: np.ndarray | None, target: np.ndarray, reason: str) -> None:
    """Join a tensor dimension's elements ``ids`` with a layer's ``target`` elements; an
    inert dimension pins the layer's elements instead."""
    if ids is None:
        space.pin(target, reason)
    else:
        space.join(ids, target)


def broadcast_join(space: ElementSpace, infos: list[TensorInfo], out_shape: tuple[int, ...],
                   reason: str) -> TensorInfo:
    """Element-wise op with broadcasting: equal-position elements of non-broadcast dims are
    joined; a prunable dim meeting an inert dim of the same size is pinned."""
    n = len(out_shape)
    axes: dict[int, np.ndarray] = {}
    why: dict[int, str] = {}
    for d in range(n):
        if out_shape[d] <= 1:
            continue
        present = []
        inert_full = False
        for info in infos:
            k = d - (n - info.ndim)
            if k < 0 or info.shape[k] == 1:
                continue  # broadcast: couples nothing
            ids = info.axes.get(k)
            if ids is None:
                inert_full = True
                if k in info.why:
                    why.setdefault(d, info.why[k])
            else:
                present.append(ids)
        if not present:
            continue
        for other in present[1:]:
            space.join(present[0], other)
        if inert_full:
            space.pin(present[0], f"{reason} combines it with an unprunable dim of the same size")
        else:
            axes[d] = present[0]
    return TensorInfo(tuple(out_shape), axes,
                      why={d: w for d, w in why.items() if d not in axes})


def permute_info(info: TensorInfo, order: list[int]) -> TensorInfo:
    """Move dimensions: output dim i is input dim ``order[i]``."""
    order = [o % info.ndim for o in order]
    shape = tuple(info.shape[o] for o in order)
    axes = {i: info.axes[o] for i, o in enumerate(order) if o in info.axes}
    why = {i: info.why[o] for i, o in enumerate(order) if o in info.why}
    return TensorInfo(shape, axes, why)


def reshape_groups(ins: tuple[int, ...], outs: tuple[int, ...]) -> list[tuple[list[int], list[int]]]:
    """Split a reshape into independent groups of consecutive input and output dims whose
    sizes multiply to the same number (row-major order makes each group separable)."""
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(ins) or j < len(outs):
        gi: list[int] = []
        gj: list[int] = []
        pi = pj = 1
        if i < len(ins):
            gi.append(i)
            pi *= ins[i]
            i += 1
        if j < len(outs):
            gj.append(j)
            pj *= outs[j]
            j += 1
        while pi != pj:
            if (pi < pj and i < len(ins)) or j >= len(outs):
                if i >= len(ins):
                    raise ValueError(f"cannot reshape {ins} to {outs}")
                gi.append(i)
                pi *= ins[i]
                i += 1
            else:
                gj.append(j)
                pj *= outs[j]
                j += 1
        groups.append((gi, gj))
    return groups


def _group_array(info: TensorInfo, dims: list[int]) -> np.ndarray | None:
    """The element ids of a group of dims as one array over those dims, or None when the
    group holds one prunable dim at most and the rest is inert (ids broadcast)."""
    if not any(d in info.axes for d in dims):
        return None
    sizes = [info.shape[d] for d in dims]
    prunable = [d for d in dims if d in info.axes]
    if len(prunable) > 1:
        return None  # several independent element axes cannot merge; caller pins
    d0 = prunable[0]
    view = [1] * len(dims)
    view[dims.index(d0)] = info.shape[d0]
    return np.broadcast_to(info.axes[d0].reshape(view), sizes)


def reshape_info(space: ElementSpace, info: TensorInfo, out_shape: tuple[int, ...],
                 reason: str, tie_largest: bool = True) -> TensorInfo:
    """Map elements through a reshape (view, flatten, unflatten).

    Merging a prunable dim with inert dims repeats its elements (flatten C×H×W ties channel
    c to its H·W features). Splitting a prunable dim into several dims keeps one of them
    prunable (the largest) and joins the elements along the others, so that whatever is
    kept stays a rectangle; the other dims become inert. Merging two prunable dims pins the
    smaller one.
    """
    axes: dict[int, np.ndarray] = {}
    for gi, gj in reshape_groups(info.shape, tuple(out_shape)):
        prunable = [d for d in gi if d in info.axes]
        if len(prunable) > 1:
            keep = max(prunable, key=lambda d: info.shape[d])
            for d in prunable:
                if d != keep:
                    space.pin(info.axes[d], reason + " (merges two prunable dims)")
            info = TensorInfo(info.shape, {d: a for d, a in info.axes.items()
                                           if d not in prunable or d == keep})
        arr = _group_array(info, gi)
        if arr is None:
            continue
        out_sizes = [out_shape[j] for j in gj]
        arr = np.ascontiguousarray(arr).reshape(out_sizes)
        axes.update(_split_axes(space, arr, gj, tie_largest))
    return TensorInfo(tuple(out_shape), axes)


def _split_axes(space: ElementSpace, arr: np.ndarray, dims: list[int],
                tie_largest: bool) -> dict[int, np.ndarray]:
    """Reduce an id array over ``dims`` to per-dim ids: axes along which ids do not vary
    carry no elements; of the rest one stays prunable and the others are joined."""
    varying = [k for k in range(arr.ndim)
               if arr.shape[k] > 1 and not np.all(arr == arr.take([0], axis=k))]
    if not varying:
        # one element repeated along every dim: it still lives here, on the largest dim
        k = max(range(arr.ndim), key=lambda k: arr.shape[k]) if arr.ndim else None
        return {dims[k]: _line(arr, k)} if k is not None and arr.shape[k] > 1 else {}
    if len(varying) == 1:
        k = varying[0]
        return {dims[k]: _line(arr, k)}
    keep = max(varying, key=lambda k: (arr.shape[k], k)) if tie_largest else min(varying)
    moved = np.moveaxis(arr, keep, -1).reshape(-1, arr.shape[keep])
    for row in moved[1:]:
        space.join(moved[0], row)
    return {dims[keep]: moved[0].copy()}


def _line(arr: np.ndarray, k: int) -> np.ndarray:
    index: list[int | slice] = [0] * arr.ndim
    index[k] = slice(None)
    return np.ascontiguousarray(arr[tuple(index)])
