"""A picture of a supernet's graph: layers, data flow, units as colours, pinned channels.

:func:`draw` writes a self-contained HTML page (inline SVG, a little CSS and JS, nothing
fetched: it opens from ``file://``) or a plain SVG, by the path's suffix.

Example:
    >>> import tempfile, pathlib, torch, fxrazor
    >>> from torch import nn
    >>> sn = fxrazor.convert(nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 2, 1)),
    ...                      torch.randn(1, 3, 4, 4))
    >>> path = draw(sn, pathlib.Path(tempfile.mkdtemp()) / "net.svg")
    >>> "model output" in path.read_text()
    True
"""

from __future__ import annotations

import colorsys
import dataclasses
import logging
import operator
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from torch import fx

from fxrazor.analysis.context import fn_name
from fxrazor.analysis.result import Slot
from fxrazor.drawing_render import NodeView, PinView, Scene, UnitView, to_html, to_svg
from fxrazor.errors import InvalidArgumentError, UnsupportedModelError
from fxrazor.ops.graph_ops import DynamicParam
from fxrazor.supernet import Supernet

__all__ = ["draw", "scene"]

logger = logging.getLogger(__name__)

_WRITERS = {".html": to_html, ".htm": to_html, ".svg": to_svg}
# Plumbing between tensors: drawn as edges straight from what they read.
_PASS_THROUGH = {"getitem", "getattr", "contiguous"}
_GOLDEN_ANGLE = 137.508  # hue steps that keep neighbouring units apart
_NO_RULE = "pinned: no channel rule, so every channel it takes is pinned"


def _colours(i: int) -> tuple[str, str]:
    """(fill, stroke) of unit ``i``: hues by the golden angle, two tones alternating."""
    hue = (i * _GOLDEN_ANGLE) % 360 / 360
    light, sat = ((0.74, 0.75), (0.84, 0.6))[i % 2]

    def hexed(lum: float, s: float) -> str:
        r, g, b = colorsys.hls_to_rgb(hue, lum, s)
        return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"

    return hexed(light, sat), hexed(0.38, 0.65)


def _name_of(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def _short(path: str, limit: int = 34) -> str:
    """The last components of a long module path (its distinguishing part), marked as cut.

    >>> _short("encoder.layers.encoder_layer_0.self_attention.q_proj")
    '…self_attention.q_proj'
    """
    if len(path) <= limit:
        return path
    parts = path.split(".")
    tail = parts.pop()
    while parts and len(parts[-1]) + len(tail) + 2 <= limit:
        tail = f"{parts.pop()}.{tail}"
    return "…" + tail[-(limit - 1):]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _shape(node: fx.Node) -> str:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return "x".join(str(int(s)) for s in shape) if shape is not None else ""


class _Units:
    """Slots, units and pins of a supernet, by layer or parameter path."""

    def __init__(self, sn: Supernet) -> None:
        analysis = sn.analysis
        every = sn.every_unit()
        # analysis unit index -> index of the drawn (mutable) unit, or absent
        self.drawn = {i: k for k, i in enumerate(i for i, u in enumerate(every) if u.is_mutable)}
        self.names = [every[i].name for i in self.drawn]
        self.slots: dict[str, list[Slot]] = {}
        for slot in analysis.slot_maps:
            self.slots.setdefault(slot.target, []).append(slot)
        self.maps = analysis.slot_maps
        self.unknown = analysis.unknown_nodes  # the nodes of ops without a channel rule
        self.reasons: dict[Slot, list[str]] = {}
        self.pins: list[PinView] = []
        for group in analysis.pinned:
            where = ", ".join(str(s) for s in group.slots)
            self.pins.append(PinView(where, group.num_positions, tuple(group.reasons)))
            for slot in group.slots:
                self.reasons.setdefault(slot, []).extend(group.reasons)
        for spec, unit in zip(analysis.units, every, strict=True):
            if unit.is_mutable:
                continue
            why = (f"unit {unit.name} is fixed" if unit.is_fixed
                   else f"unit {unit.name} has a single channel, which cannot be pruned")
            self.pins.append(PinView(", ".join(str(s) for s, _ in spec.members),
                                     unit.num_channels, (why,)))
            for slot, _ in spec.members:
                self.reasons.setdefault(slot, []).append(why)

    def of(self, units: Iterable[int]) -> tuple[int, ...]:
        """The drawn units among analysis unit indices, once each, in order."""
        return tuple(dict.fromkeys(self.drawn[u] for u in units if u in self.drawn))

    def sides(self, target: str) -> tuple[tuple[int, ...], tuple[int, ...], list[str], list[str]]:
        """(in units, out units, in-side pin reasons, out-side pin reasons) of a path."""
        ins: list[int] = []
        outs: list[int] = []
        pin_in: list[str] = []
        pin_out: list[str] = []
        for slot in self.slots.get(target, []):
            found = self.maps[slot].unit.tolist()
            why = [f"pinned {slot.role}: {r}" for r in self.reasons.get(slot, [])]
            if slot.role in ("in", "channels"):
                ins += found
                pin_in += why
            if slot.role != "in":
                outs += found
                pin_out += why
        return self.of(ins), self.of(outs), pin_in, pin_out


def _flowing(sn: Supernet, units: _Units, node: fx.Node) -> tuple[int, ...]:
    """Drawn units of a function's output (from the analysis' per-node position maps)."""
    dims = sn.analysis.node_dims.get(node.name) or {}
    found: list[int] = []
    for dim in sorted(dims):
        found += np.unique(dims[dim].unit).tolist()
    return units.of(found)


def _layer(sn: Supernet, units: _Units, node: fx.Node) -> tuple[NodeView, str, list[str]]:
    """A call_module node (its slots give the units of its input band and body), its
    target for the hover text, and why its channels are pinned."""
    module = sn.graph_module.get_submodule(str(node.target))
    kind = type(module).__name__
    path = module.target if isinstance(module, DynamicParam) else str(node.target)
    band = any(s.role in ("in", "channels") for s in units.slots.get(path, []))
    ins, outs, pin_in, pin_out = units.sides(path)
    if isinstance(module, DynamicParam):
        kind, ins = "parameter", ()
    elif path not in units.slots:  # not pruned itself (an activation, a pool)
        outs = _flowing(sn, units, node)
    if path in sn.analysis.opaque:
        pin_out.append(f"pinned: opaque, {sn.analysis.opaque[path]}")
    if node.name in units.unknown:
        pin_out.append(_NO_RULE)
    lines = (_short(path), f"{kind} {_shape(node)}".strip())
    view = NodeView(node.name, lines, "", ins, outs, bool(pin_in), bool(pin_out), True, band)
    return view, f"target: {path} ({kind})", pin_in + pin_out


def _view(sn: Supernet, units: _Units, node: fx.Node) -> NodeView:
    facts = [node.name, f"op: {node.op}"]
    pins: list[str] = []
    if node.op == "call_module":
        view, target, pins = _layer(sn, units, node)
        facts.append(target)
    else:
        label = {"placeholder": "input ", "output": ""}.get(node.op, "")
        if node.op in ("call_function", "call_method"):
            facts.append(f"target: {fn_name(node.target)}")
            if node.name in units.unknown:
                pins.append(_NO_RULE)
        lines = (label + _name_of(node.target), _shape(node))
        view = NodeView(node.name, lines, "", (), _flowing(sn, units, node), False,
                        bool(pins), False, False)
    if _shape(node):
        facts.append(f"output shape: {_shape(node)}")
    facts.append("in units: " + (", ".join(units.names[u] for u in view.in_units) or "-"))
    facts.append("out units: " + (", ".join(units.names[u] for u in view.out_units) or "-"))
    return dataclasses.replace(view, hover="\n".join(facts + list(dict.fromkeys(pins))))


def _shown(node: fx.Node) -> bool:
    """Inputs, outputs and tensor-valued nodes; not size arithmetic, asserts, counters."""
    return node.op in ("placeholder", "output") or "tensor_meta" in node.meta


def scene(sn: Supernet, title: str | None = None) -> Scene:
    """What :func:`draw` draws, as plain data: nodes, edges, units, pins, opaque modules."""
    units = _Units(sn)
    views: list[NodeView] = []
    edges: list[tuple[int, int]] = []
    drawn_as: dict[fx.Node, tuple[int, ...]] = {}  # node -> the drawn nodes it stands for
    for node in sn.graph_module.graph.nodes:
        sources = tuple(dict.fromkeys(
            i for arg in node.all_input_nodes for i in drawn_as.get(arg, ())))
        if not _shown(node):
            continue
        if node.op in ("call_function", "call_method") and (
                _name_of(node.target) in _PASS_THROUGH or node.target is operator.getitem):
            drawn_as[node] = sources
            continue
        drawn_as[node] = (len(views),)
        edges += [(s, len(views)) for s in sources]
        views.append(_view(sn, units, node))
    every = sn.every_unit()
    unit_views = []
    for k, i in enumerate(units.drawn):
        spec, unit = sn.analysis.units[i], every[i]
        fill, stroke = _colours(k)
        unit_views.append(UnitView(unit.name, fill, stroke, unit.num_channels,
                                   int(unit.activated_channels),
                                   tuple(str(s) for s, _ in spec.members)))
    if title is None:
        title = (f"{type(sn.graph_module).__name__} supernet: {_count(len(unit_views), 'unit')}, "
                 f"{_count(len(units.pins), 'pinned group')}")
    opaque = sorted(sn.analysis.opaque.items())
    opaque += [(name, "no channel rule, so every channel it takes is pinned")
               for name in dict.fromkeys(sn.analysis.unknown_ops)]
    return Scene(title, tuple(views), tuple(edges), tuple(unit_views), tuple(units.pins),
                 tuple(opaque))


def draw(sn: Supernet, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write a picture of ``sn``'s graph to ``path``: HTML (``.html``) or SVG (``.svg``).

    Layers and the functions that move tensors (add, cat, view, matmul, ...) are nodes,
    top to bottom along the data flow; shape arithmetic and ``getitem`` are left out. A
    layer's body has the colour of the unit of its output channels, its top band that of
    its input channels; pinned channels are hatched with a red border. Hovering a node
    shows its name, op, target and units; the legend lists every unit (colour, channels,
    width now/total, members) and every pinned group with why, readable in print too.

    Args:
        sn: a supernet from :func:`fxrazor.convert`.
        path: the file to write; its parent folders are made. Same input, same bytes.
        title: the heading; by default the model class with counts of units and pins.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if not isinstance(sn, Supernet):
        raise UnsupportedModelError(
            f"draw expects a Supernet from fxrazor.convert, got {type(sn).__name__}; convert "
            f"the model first: fxrazor.draw(fxrazor.convert(model, inputs), path)")
    out = Path(path)
    writer = _WRITERS.get(out.suffix.lower())
    if writer is None:
        raise InvalidArgumentError(
            f"draw writes .html or .svg, by the path's suffix; got {str(out)!r}")
    if title is not None and not isinstance(title, str):
        raise InvalidArgumentError(f"draw: title must be a str, got {type(title).__name__}")
    text = writer(scene(sn, title))
    _write(out, text)
    logger.info("drew %s: %d characters", out, len(text))
    return out


def _write(out: Path, text: str) -> None:
    """Write beside ``out`` and move the file in whole: a failed write leaves no half
    picture behind (nor a stale one half overwritten)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
