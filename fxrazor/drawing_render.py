"""SVG and HTML text of a drawn supernet graph (see :func:`fxrazor.draw`).

A node is a box: its top band has the colours of the units of its input channels, its body
those of its output channels; a pinned side is hatched and the box gets a red border. Every
text is escaped, and nothing is fetched from elsewhere: the page opens from ``file://``.

Example:
    >>> scene = Scene("t<1>", (NodeView("fc", ("fc", "Linear"), "fc: Linear", (0,), (1,),
    ...                                 pinned_out=True),),
    ...               (), (UnitView("u&1", "#f00", "#900", 4, 2, ("fc.out",)),
    ...                    UnitView("u2", "#0f0", "#090", 4, 4, ())),
    ...               (PinView("fc.out", 4, ("model output",)),), ())
    >>> text = to_svg(scene)
    >>> "u&amp;1" in text and "t&lt;1&gt;" in text and "model output" in text
    True
"""

from __future__ import annotations

import html
import textwrap
from dataclasses import dataclass
from itertools import pairwise

from fxrazor.drawing_layout import Box, Layout, layout

__all__ = ["NodeView", "UnitView", "PinView", "Scene", "Line", "legend_lines", "to_svg", "to_html"]

PIN_RED = "#d62728"
NO_UNIT = "#f2f2f2"
EDGE_GREY = "#9a9a9a"
BAND = 7.0  # height of the input band
CHAR_W = 6.4  # width of a character of 11px sans-serif, near enough to size boxes
WRAP = 96  # characters per line of the SVG legend


@dataclass(frozen=True)
class NodeView:
    """One drawn node: two label lines, the hover text, unit indices (into
    ``Scene.units``) of its input and output sides, and which sides are pinned."""

    name: str
    lines: tuple[str, str]
    hover: str
    in_units: tuple[int, ...]
    out_units: tuple[int, ...]
    pinned_in: bool = False
    pinned_out: bool = False
    layer: bool = True  # a layer (box) rather than a function, input or output (pill)
    band: bool = True  # the layer has input channels of its own (an input band to colour)


@dataclass(frozen=True)
class UnitView:
    """A legend row: name, fill and stroke colours, channels, current width, members."""

    name: str
    fill: str
    stroke: str
    channels: int
    width: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class PinView:
    """Pinned channels: where (layers and roles), how many positions, and why."""

    where: str
    positions: int
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Scene:
    """Everything drawn: title, nodes (in topological order), edges between their
    indices, the units, the pinned groups, and opaque modules with why."""

    title: str
    nodes: tuple[NodeView, ...]
    edges: tuple[tuple[int, int], ...]
    units: tuple[UnitView, ...]
    pins: tuple[PinView, ...]
    opaque: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Line:
    """A legend line: css class (``lh`` heading, ``lg`` entry, ``lm`` detail), swatch
    colour or '', text, and the unit key a click highlights ('' for none)."""

    css: str
    swatch: str
    text: str
    key: str = ""
    wrap: bool = False  # may go on several lines in SVG (a list; a reason stays whole)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _size(node: NodeView) -> tuple[float, float]:
    chars = max(len(node.lines[0]), len(node.lines[1]))
    return max(64.0, min(230.0, chars * CHAR_W + 18)), (40.0 if node.layer else 30.0)


def _strips(box: Box, top: float, height: float, colours: list[str]) -> list[str]:
    """Equal vertical strips of ``colours`` across the box, from ``top`` down ``height``."""
    step = box.w / len(colours)
    left = box.x - box.w / 2
    return [f'<rect x="{left + i * step:.1f}" y="{top:.1f}" width="{step:.1f}" '
            f'height="{height:.1f}" fill="{c}"/>' for i, c in enumerate(colours)]


def _node(scene: Scene, index: int, node: NodeView, box: Box) -> str:
    left, top = box.x - box.w / 2, box.y - box.h / 2
    fills = [scene.units[u].fill for u in node.out_units] or [NO_UNIT]
    bands = [scene.units[u].fill for u in node.in_units] or ["#ffffff"]
    radius = 4 if node.layer else box.h / 2
    clip = f"fxr-clip-{index}"
    units = " ".join(f"u{u}" for u in dict.fromkeys(node.in_units + node.out_units))
    pinned = node.pinned_in or node.pinned_out
    css = "node pin" if pinned else "node"
    parts = [f'<g class="{css}" data-units="{units}"><title>{_e(node.hover)}</title>',
             f'<clipPath id="{clip}"><rect x="{left:.1f}" y="{top:.1f}" width="{box.w:.1f}" '
             f'height="{box.h:.1f}" rx="{radius:.1f}"/></clipPath>',
             f'<g clip-path="url(#{clip})">']
    parts += _strips(box, top, box.h, fills)
    if node.band:
        parts += _strips(box, top, BAND, bands)
    if node.pinned_out:
        parts.append(f'<rect x="{left:.1f}" y="{top + BAND:.1f}" width="{box.w:.1f}" '
                     f'height="{box.h - BAND:.1f}" fill="url(#fxr-hatch)"/>')
    if node.pinned_in:
        parts.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{box.w:.1f}" '
                     f'height="{BAND:.1f}" fill="url(#fxr-hatch)"/>')
    stroke = f'stroke="{PIN_RED}" stroke-width="2.5"' if pinned else 'stroke="#555"'
    parts.append(f'</g><rect x="{left:.1f}" y="{top:.1f}" width="{box.w:.1f}" '
                 f'height="{box.h:.1f}" rx="{radius:.1f}" fill="none" {stroke}/>')
    line0, line1 = (_e(t) for t in node.lines)
    shift = BAND / 2 if node.band else 0.0
    if line1:
        parts.append(f'<text x="{box.x:.1f}" y="{box.y + shift - 2:.1f}" class="n">{line0}'
                     f'</text><text x="{box.x:.1f}" y="{box.y + shift + 10:.1f}" class="t">'
                     f'{line1}</text>')
    else:
        parts.append(f'<text x="{box.x:.1f}" y="{box.y + 4:.1f}" class="n">{line0}</text>')
    return "".join(parts) + "</g>"


def _edge(scene: Scene, src: NodeView, route: tuple[tuple[float, float], ...]) -> str:
    colour = scene.units[src.out_units[0]].stroke if src.out_units else EDGE_GREY
    x, y = route[0]
    d = [f"M{x:.1f},{y:.1f}"]
    for (x0, y0), (x1, y1) in pairwise(route):
        mid = (y0 + y1) / 2
        d.append(f"C{x0:.1f},{mid:.1f} {x1:.1f},{mid:.1f} {x1:.1f},{y1:.1f}")
    return (f'<path class="e" d="{" ".join(d)}" stroke="{colour}" '
            f'marker-end="url(#fxr-arrow)"/>')


_DEFS = (
    '<defs><pattern id="fxr-hatch" patternUnits="userSpaceOnUse" width="6" height="6" '
    'patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffffff" '
    'fill-opacity="0.3"/><line x1="0" y1="0" x2="0" y2="6" stroke="' + PIN_RED + '" '
    'stroke-width="1.5" stroke-opacity="0.7"/></pattern><marker id="fxr-arrow" '
    'viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" markerHeight="7" orient="auto">'
    '<path d="M0,0L8,4L0,8z" fill="#777"/></marker></defs>'
)
_SVG_STYLE = (
    "<style>text{font-family:Helvetica,Arial,sans-serif;fill:#222}"
    ".n{font-size:11px;text-anchor:middle}.t{font-size:9.5px;text-anchor:middle;fill:#444}"
    ".e{fill:none;stroke-width:1.3}.lg{font-size:12px}.lm{font-size:10.5px;fill:#555}"
    ".lh{font-size:14px;font-weight:bold}.dim{opacity:0.18}"
    # a white halo keeps a label readable over the hatching of pinned channels
    ".pin text{paint-order:stroke;stroke:#ffffff;stroke-width:3px;stroke-linejoin:round}"
    "</style>"
)


def _graph(scene: Scene, plan: Layout) -> list[str]:
    edges = [_edge(scene, scene.nodes[u], route)
             for (u, _), route in zip(scene.edges, plan.routes, strict=True)]
    placed = zip(scene.nodes, plan.boxes, strict=True)
    nodes = [_node(scene, i, node, box) for i, (node, box) in enumerate(placed)]
    return ['<g class="edges">', *edges, '</g><g class="nodes">', *nodes, "</g>"]


def legend_lines(scene: Scene) -> list[Line]:
    """The legend, line by line, shared by the SVG and the HTML page."""
    lines = [Line("lh", "", "Units (name: channels, width now/total)")]
    if not scene.units:
        lines.append(Line("lm", "", "No prunable units: every channel is pinned (see below)."))
    for i, u in enumerate(scene.units):
        lines.append(Line("lg", u.fill, f"{u.name}: {u.channels} channels, width "
                                        f"{u.width}/{u.channels}", f"u{i}"))
        lines.append(Line("lm", "", "members: " + ", ".join(u.members), wrap=True))
    lines.append(Line("lh", "", "Pinned channels (hatched, red border)"))
    if not scene.pins:
        lines.append(Line("lm", "", "none"))
    for pin in scene.pins:
        lines.append(Line("lg", PIN_RED, f"{pin.where} ({pin.positions} positions)"))
        lines += [Line("lm", "", "why: " + reason) for reason in pin.reasons]
    if scene.opaque:
        lines.append(Line("lh", "", "Opaque layers and ops (hatched, red border)"))
        lines += [Line("lm", "", f"{name}: {why}") for name, why in scene.opaque]
    return lines


def _svg_legend(scene: Scene, left: float) -> tuple[list[str], float, float]:
    """The legend's SVG elements, its height and its width."""
    out = [f'<text x="{left:.1f}" y="28" class="lh">{_e(scene.title)}</text>']
    y, chars = 56.0, len(scene.title)
    for line in legend_lines(scene):
        if line.swatch:
            out.append(f'<rect x="{left:.1f}" y="{y + 5:.1f}" width="12" height="12" '
                       f'fill="{line.swatch}" stroke="#555"/>')
        # SVG text does not wrap: a long member list goes on several lines
        texts = textwrap.wrap(line.text, WRAP, subsequent_indent="  ") if line.wrap else []
        for text in texts or [line.text]:
            y += 20 if line.css == "lh" else 15
            chars = max(chars, len(text) + 3)
            out.append(f'<text x="{left + (18 if line.swatch else 0):.1f}" y="{y:.1f}" '
                       f'class="{line.css}">{_e(text)}</text>')
    return out, y + 20, chars * CHAR_W


def _plan(scene: Scene) -> Layout:
    return layout([_size(n) for n in scene.nodes], scene.edges)


def to_svg(scene: Scene) -> str:
    """A standalone SVG document: the graph on the left, the legend on the right."""
    plan = _plan(scene)
    legend, legend_h, legend_w = _svg_legend(scene, plan.width + 30)
    width = plan.width + 30 + legend_w + 40
    height = max(plan.height, legend_h)
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}">',
        f"<title>{_e(scene.title)}</title>", _SVG_STYLE, _DEFS,
        '<rect width="100%" height="100%" fill="#ffffff"/>',
        *_graph(scene, plan), *legend, "</svg>", ""])


_PAGE_STYLE = """
body{margin:0;font-family:Helvetica,Arial,sans-serif;color:#222;display:flex;height:100vh}
#legend{width:440px;flex:none;overflow:auto;padding:12px 16px;border-right:1px solid #ccc;
font-size:12.5px;box-sizing:border-box}
#graph{flex:1;overflow:auto}
h1{font-size:16px;margin:0 0 8px}h2{font-size:14px;margin:14px 0 6px}
.row{margin:4px 0}.sw{display:inline-block;width:12px;height:12px;border:1px solid #555;
vertical-align:-2px;margin-right:6px}.lm{color:#555;font-size:11.5px;margin-left:20px}
.lg[data-unit]{cursor:pointer}.lg.on{font-weight:bold}.hint{color:#777;font-size:11px}
svg .dim{opacity:0.18}
@media print{body{display:block;height:auto}#legend,#graph{width:auto;overflow:visible;
border:none}}
"""

# Click a unit in the legend to fade every node outside it; click it again to clear.
_SCRIPT = """
(function(){var on=null;var rows=document.querySelectorAll('[data-unit]');
rows.forEach(function(row){row.addEventListener('click',function(){
var u=row.getAttribute('data-unit');on=(on===u)?null:u;
rows.forEach(function(r){r.classList.toggle('on',r.getAttribute('data-unit')===on);});
document.querySelectorAll('g.node').forEach(function(g){
var has=(' '+g.getAttribute('data-units')+' ').indexOf(' '+on+' ')>=0;
g.classList.toggle('dim',on!==null&&!has);});});});})();
"""


def _html_legend(scene: Scene) -> list[str]:
    out = [f"<h1>{_e(scene.title)}</h1>",
           '<div class="hint">Hover a node for its name, op and units; click a unit to '
           "highlight its layers. Top band: units of a layer's input channels; body: of "
           "its output channels.</div>"]
    for line in legend_lines(scene):
        if line.css == "lh":
            out.append(f"<h2>{_e(line.text)}</h2>")
            continue
        key = f' data-unit="{line.key}"' if line.key else ""
        sw = f'<span class="sw" style="background:{line.swatch}"></span>' if line.swatch else ""
        out.append(f'<div class="row {line.css}"{key}>{sw}{_e(line.text)}</div>')
    return out


def to_html(scene: Scene) -> str:
    """A self-contained HTML page: the legend on the left, the graph as inline SVG."""
    plan = _plan(scene)
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(scene.title)}</title><style>{_PAGE_STYLE}</style></head><body>",
        '<div id="legend">', *_html_legend(scene), "</div>", '<div id="graph">',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{plan.width:.0f}" '
        f'height="{plan.height:.0f}" viewBox="0 0 {plan.width:.0f} {plan.height:.0f}">',
        _SVG_STYLE, _DEFS, *_graph(scene, plan), "</svg></div>",
        f"<script>{_SCRIPT}</script>", "</body></html>", ""])
