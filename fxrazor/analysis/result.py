"""The result of channel-dependency discovery: immutable data, no torch modules.

Example:
    >>> slot = Slot("layer1.conv", "out", 16)
    >>> slot.is_producer, str(slot)
    (True, 'layer1.conv.out')
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np

__all__ = ["Slot", "param_role", "param_dim", "UnitSpec", "PinnedGroup", "PinnedGroups", "ResizeSite", "ChannelAnalysis",
           "PositionMap", "NodeDims"]


def param_role(dim: int) -> str:
    """The slot role of dim ``dim`` of a parameter used directly in the graph."""
    return f"dim{dim}"


def param_dim(role: str) -> int:
    """The dim of a parameter slot role (the inverse of :func:`param_role`)."""
    if not role.startswith("dim"):
        raise ValueError(f"{role!r} is not a parameter slot role")
    return int(role[3:])


@dataclass(frozen=True)
class Slot:
    """One prunable dimension of one layer or parameter.

    Attributes:
        target: module path (``call_module`` target) or parameter path (``get_attr`` target).
        role: ``out``/``in`` (conv, linear, embedding), ``channels`` (norms) or ``dim<k>``
            (dimension k of a parameter used directly in the graph).
        size: number of positions in that dimension.
        constant: a buffer used directly in the graph (a fixed table or mask): it is sliced
            with the channels it meets but never creates any, so channels that only a
            buffer provides are not prunable.
    """

    target: str
    role: str
    size: int
    constant: bool = False

    @property
    def is_producer(self) -> bool:
        """Whether the slot creates channels (rather than passing or consuming them)."""
        return self.role == "out" or (self.role.startswith("dim") and not self.constant)

    @property
    def is_param(self) -> bool:
        """Whether the slot is a dim of a parameter or buffer used directly in the graph."""
        return self.role.startswith("dim")

    @property
    def param_dim(self) -> int:
        """The tensor dim of a parameter slot (role ``dim<k>``)."""
        return param_dim(self.role)

    def __str__(self) -> str:
        return f"{self.target}.{self.role}"


@dataclass(frozen=True)
class PositionMap:
    """For each position of a dimension: the unit that owns it and the unit's channel
    index, or -1/-1 for a pinned (always kept) position."""

    unit: np.ndarray
    channel: np.ndarray

    def __len__(self) -> int:
        return len(self.unit)

    @property
    def all_pinned(self) -> bool:
        return bool((self.unit < 0).all())


@dataclass(frozen=True)
class UnitSpec:
    """A group of channels kept or removed together.

    ``members`` lists, per slot, a (num_channels, r) array: unit channel k occupies the r
    positions ``members[i][1][k]`` of slot ``members[i][0]``.
    """

    name: str
    num_channels: int
    members: tuple[tuple[Slot, np.ndarray], ...]

    def channel_specs(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``(output_related, input_related)``: one channel spec per member (see
        ``MutableChannelUnit.config_template``)."""
        outputs: list[dict[str, Any]] = []
        inputs: list[dict[str, Any]] = []
        for slot, positions in self.members:
            # Plain lists: a unit has a few members of tens of channels, where each numpy
            # call costs more than the list work.
            values = positions.ravel().tolist()
            start, end = values[0], values[-1] + 1
            contiguous = values == list(range(start, end))
            if not contiguous:
                start, end = min(values), max(values) + 1
            entry: dict[str, Any] = {
                "name": f"{slot.target}:{slot.role}" if slot.is_param else slot.target,
                "start": start,
                "end": end,
                "expand_ratio": int(positions.shape[1]),
                "is_output_channel": slot.role != "in",
            }
            if not contiguous:
                entry["index"] = positions.tolist()
            (inputs if slot.role == "in" else outputs).append(entry)
        return outputs, inputs


@dataclass(frozen=True)
class PinnedGroup:
    """Channels that can never be removed, the layers they touch and why."""

    slots: tuple[Slot, ...]
    num_positions: int
    reasons: tuple[str, ...]


class PinnedGroups(Sequence[PinnedGroup]):
    """The pinned groups of an analysis, worked out when first read.

    Only summaries read them, and grouping the pinned channels by the layers they touch
    and collecting the reasons costs a few percent of a conversion. Reads like a tuple,
    and pickles and copies as one.

    Example:
        >>> groups = PinnedGroups(lambda: (PinnedGroup((), 3, ("model output",)),))
        >>> len(groups), groups[0].reasons, groups == (PinnedGroup((), 3, ("model output",)),)
        (1, ('model output',), True)
    """

    def __init__(self, build: Callable[[], tuple[PinnedGroup, ...]]) -> None:
        self._build: Callable[[], tuple[PinnedGroup, ...]] | None = build
        self._groups: tuple[PinnedGroup, ...] = ()

    def _get(self) -> tuple[PinnedGroup, ...]:
        build = self._build  # read once: another thread may finish the build meanwhile
        if build is not None:
            self._groups = tuple(build())
            self._build = None  # drops the inputs
        return self._groups

    @overload
    def __getitem__(self, index: int) -> PinnedGroup: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[PinnedGroup, ...]: ...
    def __getitem__(self, index: int | slice) -> PinnedGroup | tuple[PinnedGroup, ...]:
        return self._get()[index]

    def __len__(self) -> int:
        return len(self._get())

    def __iter__(self) -> Iterator[PinnedGroup]:
        return iter(self._get())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PinnedGroups):
            other = other._get()
        return self._get() == other

    def __hash__(self) -> int:
        return hash(self._get())

    def __reduce__(self) -> tuple[Any, ...]:
        return tuple, (self._get(),)

    def __repr__(self) -> str:
        return repr(self._get())


class NodeDims(Mapping[str, dict[int, PositionMap]]):
    """Per graph node (by name) with a tensor output, the position map of each prunable
    dim (a dim missing is inert: it keeps its traced size under every choice).

    Worked out when first read, like :class:`PinnedGroups`: only resource estimates read
    it, and mapping every node's element ids would cost conversions a few percent. Pickles
    and copies as a dict.

    Example:
        >>> import numpy as np
        >>> dims = NodeDims(lambda: {"fc": {1: PositionMap(np.array([0, -1]), np.array([0, -1]))}})
        >>> len(dims["fc"][1]), list(dims)
        (2, ['fc'])
    """

    def __init__(self, build: Callable[[], dict[str, dict[int, PositionMap]]]) -> None:
        self._build: Callable[[], dict[str, dict[int, PositionMap]]] | None = build
        self._dims: dict[str, dict[int, PositionMap]] = {}

    def _get(self) -> dict[str, dict[int, PositionMap]]:
        build = self._build  # read once: another thread may finish the build meanwhile
        if build is not None:
            self._dims = build()
            self._build = None  # drops the walk's state
        return self._dims

    def __getitem__(self, name: str) -> dict[int, PositionMap]:
        return self._get()[name]

    def __len__(self) -> int:
        return len(self._get())

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __reduce__(self) -> tuple[Any, ...]:
        return dict, (self._get(),)


@dataclass(frozen=True)
class ResizeSite:
    """A size literal in a graph call that follows pruned channels.

    The new value of part i is the number of kept positions of ``parts[i]``.

    Attributes:
        node: name of the graph node.
        kind: ``arg`` (one size inside the call's arguments: a view/reshape/expand/
            unflatten size, a layer_norm's normalized_shape), ``split`` (split/chunk sizes)
            or ``slice`` (getitem slice bounds).
        where: for ``arg``, the index path of the size inside ``node.args``; for
            ``split``, the dim; for ``slice``, (position in the index tuple or None,
            'start'/'stop' per part).
        parts: position maps whose kept counts give the new values.
    """

    node: str
    kind: str
    where: tuple
    parts: tuple[PositionMap, ...]


@dataclass(frozen=True)
class ChannelAnalysis:
    """Units, pinned groups, position maps of every slot, and size literals to follow."""

    units: tuple[UnitSpec, ...]
    pinned: Sequence[PinnedGroup]  # a tuple or PinnedGroups
    slot_maps: dict[Slot, PositionMap]
    resize_sites: tuple[ResizeSite, ...]
    opaque: dict[str, str] = field(default_factory=dict)
    unknown_ops: tuple[str, ...] = ()
    # (node name, argument path, value): sizes read from pruned widths that must stay fixed
    # (a path starting with a name is a keyword argument's)
    const_args: tuple[tuple[str, tuple[int | str, ...], int | float], ...] = ()
    # positions that a function normalises over (F.layer_norm, F.group_norm, batch
    # statistics): where one belongs to a unit, zeroing is not pruning (see verify.oracle)
    normalised: tuple[PositionMap, ...] = ()
    # (unit index, channels, why): the fewest channels a unit may keep (a top-k over it)
    minimums: tuple[tuple[int, int, str], ...] = ()
    # per node name, the position maps of its output's prunable dims (a NodeDims or dict)
    node_dims: Mapping[str, dict[int, PositionMap]] = field(default_factory=dict)
    # the fx node names of the ops in ``unknown_ops`` (what a picture marks)
    unknown_nodes: frozenset[str] = frozenset()
