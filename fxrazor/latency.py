"""A per-layer latency table measured on this machine, which predicts a subnet's latency
without freezing or running it.

:meth:`LatencyTable.measure` times every layer of the supernet that has prunable channels
(convolutions, linear layers, norms: the dynamic ops) alone, on its traced input shape, at
a small grid of kept (in, out) channel counts: each grid point is the layer's own
``to_static()`` with that many channels kept, so strides, groups and depthwise rules are the
layer's. Identical (layer, input shape) pairs are timed once. Everything else (activations,
pooling, additions, layers without prunable channels) is a residual: the frozen full-width
and narrowest subnets are timed whole, less their layers' predicted sum, and a subnet's
residual is interpolated between the two by the volume of its layers' outputs (the
elementwise ops follow the activations).

:meth:`LatencyTable.predict` reads each layer's kept counts off the units' choices (as
:func:`fxrazor.estimate` does) and interpolates the grid multilinearly: microseconds per
candidate. Tables are machine-specific; they save as JSON with the torch version, thread
count and backend they were measured with.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> sn = fxrazor.convert(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)),
    ...                      torch.randn(8, 16))
    >>> table = LatencyTable.measure(sn, grid=(0, 0.5, 1), repeats=1)
    >>> sorted(table.layers), table.layers["_0"].points
    (['_0', '_2'], [[1, 16, 32]])
    >>> abs(table.predict(sn) - table.measured_ms[1]) < 1e-9  # full width: as timed whole
    True
    >>> type(table.predict(sn, {"0": 8}))
    <class 'float'>
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import fx, nn

from fxrazor.api import freeze
from fxrazor.errors import InvalidArgumentError, UnsupportedModelError
from fxrazor.estimate import KeptCounts, estimate
from fxrazor.latency_timing import Timer, machine_info, make_timer
from fxrazor.ops import DynamicOp
from fxrazor.supernet import Supernet

__all__ = ["LatencyTable", "LayerLatency", "DEFAULT_GRID"]

logger = logging.getLogger(__name__)

#: Kept fractions of each axis timed by default (0 is one channel, or one group): a
#: layer's time steps with the kernels' channel blocks, so a coarser grid (quarters) misses
#: much of it (resnet18: 0.77 rank correlation against 0.79, MAPE 53% against 19%).
DEFAULT_GRID = tuple(i / 8 for i in range(9))
_FORMAT = "fxrazor-latency-table/1"


@dataclass
class LayerLatency:
    """One layer call's timings: ``ms`` over the grid ``points`` (kept counts per axis).

    An axis is a group of the layer's roles that keep the same channels (a depthwise
    conv's ``in`` and ``out`` are one axis); ``out_axis`` is the axis of its output channels
    (None where they are pinned), ``numel`` its full-width output size.
    """

    op: str
    roles: list[list[str]]
    points: list[list[int]]
    ms: list[float]
    numel: int
    out_axis: int | None

    def at(self, counts: Sequence[int]) -> float:
        """Milliseconds at ``counts`` kept per axis: multilinear between grid points,
        linear past the ends."""
        corners: list[tuple[int, float]] = [(0, 1.0)]
        stride = 1
        for axis in reversed(range(len(self.points))):
            pts = self.points[axis]
            i = min(max(bisect_right(pts, counts[axis]) - 1, 0), max(len(pts) - 2, 0))
            w = 0.0 if len(pts) == 1 else (counts[axis] - pts[i]) / (pts[i + 1] - pts[i])
            corners = [(flat + (i + j) * stride, weight * (w if j else 1.0 - w))
                       for flat, weight in corners for j in ((0, 1) if w else (0,))]
            stride *= len(pts)
        return sum(weight * self.ms[flat] for flat, weight in corners)

    def volume(self, counts: Sequence[int]) -> float:
        """The output's size at ``counts``."""
        if self.out_axis is None:
            return float(self.numel)
        return self.numel * counts[self.out_axis] / self.points[self.out_axis][-1]


@dataclass
class _Axes:
    """Where one layer call's axes are in the supernet."""

    node: fx.Node
    op: DynamicOp
    roles: list[list[str]]
    positions: list[np.ndarray]  # per axis, the global mask positions of its channels
    steps: list[int]  # per axis, counts are multiples of this (a grouped conv's groups)


def _layer_axes(sn: Supernet) -> dict[str, _Axes]:
    """Every call of a dynamic op whose channels a choice can change, by node name."""
    total = int(sn.current_mask().numel()) - 1
    roles: dict[int, dict[str, np.ndarray]] = {}
    for b in sn._bindings:
        gidx = b.gidx.numpy()
        if isinstance(b.module, DynamicOp) and bool((gidx < total).any()):
            roles.setdefault(id(b.module), {})[b.role] = gidx
    found: dict[str, _Axes] = {}
    for node in sn.graph_module.graph.find_nodes(op="call_module"):
        module = sn.graph_module.get_submodule(cast(str, node.target))
        if id(module) not in roles:
            continue
        axes: list[list[str]] = []
        positions: list[np.ndarray] = []
        for role, gidx in sorted(roles[id(module)].items()):
            same = [i for i, p in enumerate(positions) if np.array_equal(p, gidx)]
            if same:  # a depthwise conv: in and out keep the same channels
                axes[same[0]].append(role)
            else:
                axes.append([role])
                positions.append(gidx)
        groups = getattr(module, "groups", 1)
        step = groups if groups > 1 and getattr(module, "in_channels", 0) != groups else 1
        found[node.name] = _Axes(node, cast(DynamicOp, module), axes, positions,
                                 [step] * len(axes))
    return found


def _grid_points(full: int, step: int, grid: Sequence[float]) -> list[int]:
    points = {min(full, max(step, round(f * full / step) * step)) for f in grid}
    return sorted(points | {full})


def _narrowed(layer: _Axes, counts: Sequence[int]) -> tuple[nn.Module, tuple[torch.Tensor]]:
    """The layer's static module keeping ``counts`` per axis, and an input for it."""
    op = layer.op
    before = dict(op._fxr_sel)
    try:
        for roles, count, step in zip(layer.roles, counts, layer.steps, strict=True):
            for role in roles:
                op.set_selection(role, _first(op, role, count, step))
        static = op.to_static()
    finally:
        op.__dict__["_fxr_sel"] = before
    meta = layer.node.args[0].meta["tensor_meta"]  # type: ignore[union-attr]
    shape = list(meta.shape)
    in_role = next((r for r in ("in", "channels") for axis in layer.roles if r in axis), None)
    if in_role is not None:
        axis = next(i for i, roles in enumerate(layer.roles) if in_role in roles)
        full = len(layer.positions[axis])
        dims = [d for d in range(len(shape) - 1, -1, -1) if shape[d] == full]
        if not dims:
            raise UnsupportedModelError(f"{layer.node.format_node()}: no input dim has its "
                                        f"{full} {in_role} channels")
        # channels last for these layers, on dim 1 of a batch for the others
        last = isinstance(op, (nn.Linear, nn.LayerNorm, nn.RMSNorm))
        channel = 1 if 1 in dims and not last else dims[0]
        shape[channel] = counts[axis]
    x = torch.randn(shape, dtype=meta.dtype) if meta.dtype.is_floating_point \
        else torch.zeros(shape, dtype=meta.dtype)
    return static, (x,)


def _first(op: DynamicOp, role: str, count: int, step: int) -> Any:
    """A selection keeping ``count`` positions of ``role`` (the same number in each group
    of a grouped conv's input)."""
    if role != "in" or step == 1:
        return slice(0, count)
    per_group = cast(nn.Conv2d, op).in_channels // step
    return torch.arange(per_group * step).view(step, per_group)[:, : count // step].flatten()


def _check_supernet(sn: Any) -> Supernet:
    if not isinstance(sn, Supernet):
        raise UnsupportedModelError(
            f"a latency table needs a Supernet from fxrazor.convert, got {type(sn).__name__}")
    if sn.nas_mutator.groups:
        raise UnsupportedModelError(
            "the latency table models channel widths only; this supernet has op or value "
            "mutables: freeze each subnet and time it instead")
    return sn


@dataclass
class LatencyTable:
    """Per-layer timings of one supernet on this machine, and the residual of the rest.

    Build it with :meth:`measure`; :meth:`predict` a subnet's milliseconds; :meth:`save`
    / :meth:`load` it as JSON.
    """

    layers: dict[str, LayerLatency]
    residual_ms: tuple[float, float]  # (narrowest, full width)
    volume: tuple[float, float]  # the layers' output size at (narrowest, full width)
    measured_ms: tuple[float, float]  # the frozen subnets, timed whole
    machine: dict[str, Any] = field(default_factory=dict)
    _bound: dict[int, tuple[Any, Any]] = field(default_factory=dict, repr=False,
                                               compare=False)

    @classmethod
    def measure(cls, sn: Supernet, backend: str = "torch", grid: Sequence[float] = DEFAULT_GRID,
                repeats: int = 5, warmup: int = 1, timer: Timer | None = None
                ) -> LatencyTable:
        """Time ``sn``'s layers over ``grid`` and its frozen extremes with ``backend``.

        Args:
            sn: a supernet from :func:`fxrazor.convert` (its choices are left as they were).
            backend: ``"torch"`` (eager, at torch's current thread count) or
                ``"onnxruntime"`` (one thread; needs the onnxruntime and onnx packages).
            grid: the kept fractions timed per axis (full width is always one).
            repeats, warmup: the timer's median samples and untimed runs.
            timer: ``(module, args) -> ms`` to use instead of the backend's.

        Raises:
            InvalidArgumentError: an unknown or missing backend, or a bad grid.
        """
        sn = _check_supernet(sn)
        if not grid or any(not 0 <= f <= 1 for f in grid):
            raise InvalidArgumentError(f"grid fractions must lie in [0, 1], got {grid!r}")
        time_it = timer if timer is not None else make_timer(backend, repeats, warmup)
        start = time.perf_counter()
        cache: dict[tuple[str, str, tuple[int, ...]], float] = {}
        layers = {name: _measure_layer(axes, grid, time_it, cache)
                  for name, axes in _layer_axes(sn).items()}
        table = cls(layers, (0.0, 0.0), (0.0, 0.0), (0.0, 0.0), machine_info(backend))
        ends = [sn.sample_choices("min"), sn.sample_choices("max")]
        before = sn.choices()
        try:
            measured = []
            for choices in ends:
                sn.set_choices(choices)
                measured.append(time_it(freeze(sn), tuple(sn.example_args)))
        finally:
            sn.set_choices(before)
        counts = table._bind(sn)(ends)
        sums = [table._layers_ms(row) for row in counts]
        table.residual_ms = (measured[0] - sums[0][0], measured[1] - sums[1][0])
        table.volume = (sums[0][1], sums[1][1])
        table.measured_ms = (measured[0], measured[1])
        logger.info("latency table: %d layer calls, %d distinct timed shapes, %.1f s",
                    len(layers), len(cache), time.perf_counter() - start)
        return table

    # ---- predicting ----------------------------------------------------------------------
    def _bind(self, sn: Supernet) -> KeptCounts:
        """The kept counts of this table's axes in ``sn`` (checked to match), cached."""
        key = (id(sn.graph_module), tuple(id(b.module) for b in sn._bindings))
        bound = self._bound.get(id(sn))
        if bound is not None and bound[0] == key and bound[1].sn is sn:
            return cast(KeptCounts, bound[1])
        axes = _layer_axes(_check_supernet(sn))
        positions: list[np.ndarray] = []
        for name, layer in self.layers.items():
            found = axes.get(name)
            fulls = [len(p) for p in found.positions] if found is not None else None
            if fulls != [p[-1] for p in layer.points]:
                raise InvalidArgumentError(
                    f"this latency table does not fit the supernet: layer {name} has "
                    f"channels {fulls} there, {[p[-1] for p in layer.points]} in the table")
            positions.extend(cast(_Axes, found).positions)
        if len(axes) != len(self.layers):
            raise InvalidArgumentError(f"this latency table does not fit the supernet: it has "
                                       f"{len(self.layers)} layers, the supernet {len(axes)}")
        counts = KeptCounts(sn, positions)
        self._bound[id(sn)] = (key, counts)
        return counts

    def _layers_ms(self, row: Sequence[int]) -> tuple[float, float]:
        """(the layers' milliseconds, their output volume) at the counts ``row``."""
        total, volume, i = 0.0, 0.0, 0
        for layer in self.layers.values():
            counts = row[i:i + len(layer.points)]
            i += len(layer.points)
            total += layer.at(counts)
            volume += layer.volume(counts)
        return total, volume

    def _residual(self, volume: float) -> float:
        (r_min, r_full), (v_min, v_full) = self.residual_ms, self.volume
        if v_full == v_min:
            return r_full
        return r_min + (r_full - r_min) * (volume - v_min) / (v_full - v_min)

    def predict_many(self, sn: Supernet, candidates: Sequence[Mapping[str, Any] | None]
                     ) -> list[float]:
        """Predicted milliseconds of each of ``candidates`` (``{unit: width}``; None: the
        current choices). Nothing is frozen, run or left changed."""
        rows = self._bind(sn)(list(candidates)).tolist()
        result = []
        for row in rows:
            layers_ms, volume = self._layers_ms(row)
            result.append(float(layers_ms + self._residual(volume)))
        return result

    def predict(self, sn: Supernet, choices: Mapping[str, Any] | None = None) -> float:
        """Predicted milliseconds of the subnet ``choices`` selects (default: the current)."""
        return self.predict_many(sn, [choices])[0]

    def estimator(self, sn: Supernet, counts: bool = True
                  ) -> Callable[[dict[str, Any]], dict[str, float]]:
        """A search estimator, ``choices -> {"latency": ms}`` (with :func:`fxrazor.estimate`'s
        ``flops`` and ``params`` too when ``counts``), for ``Constraints`` and the searches'
        ``estimator=``."""
        def resources(choices: dict[str, Any]) -> dict[str, float]:
            found: dict[str, float] = dict(estimate(sn, choices)) if counts else {}
            found["latency"] = self.predict(sn, choices)
            return found

        return resources

    # ---- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The table as plain JSON data."""
        return {"format": _FORMAT, "machine": self.machine,
                "residual_ms": list(self.residual_ms), "volume": list(self.volume),
                "measured_ms": list(self.measured_ms),
                "layers": {name: {"op": layer.op, "roles": layer.roles, "points": layer.points,
                                  "ms": layer.ms, "numel": layer.numel,
                                  "out_axis": layer.out_axis}
                           for name, layer in self.layers.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        """A table from :meth:`to_dict`'s data."""
        if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
            raise InvalidArgumentError(f"not a latency table ({_FORMAT}): format "
                                       f"{data.get('format') if isinstance(data, Mapping) else data!r}")
        try:
            layers = {name: LayerLatency(**fields) for name, fields in data["layers"].items()}
            pairs = [tuple(float(v) for v in data[k])
                     for k in ("residual_ms", "volume", "measured_ms")]
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidArgumentError(f"a malformed latency table: {e}") from e
        residual, volume, measured = cast("list[tuple[float, float]]", pairs)
        return cls(layers, residual, volume, measured, dict(data.get("machine", {})))

    def save(self, path: str | Path) -> None:
        """Write the table to ``path`` as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Read a table :meth:`save` wrote."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def _measure_layer(layer: _Axes, grid: Sequence[float], time_it: Timer,
                   cache: dict[tuple[str, str, tuple[int, ...]], float]) -> LayerLatency:
    """Time one layer call over the grid (each distinct static layer and shape once)."""
    points = [_grid_points(len(p), step, grid)
              for p, step in zip(layer.positions, layer.steps, strict=True)]
    ms = []
    for counts in itertools.product(*points):
        module, args = _narrowed(layer, counts)
        key = (type(module).__name__, module.extra_repr(), tuple(args[0].shape))
        if key not in cache:
            cache[key] = float(time_it(module, args))
        ms.append(cache[key])
    meta = layer.node.meta["tensor_meta"]
    out_axis = next((i for i, roles in enumerate(layer.roles)
                     if "out" in roles or "channels" in roles), None)
    return LayerLatency(layer.op.static_type.__name__, layer.roles, points, ms,
                        int(np.prod(meta.shape)), out_axis)
