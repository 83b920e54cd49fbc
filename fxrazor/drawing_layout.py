"""A layered top-to-bottom layout of a DAG for :func:`fxrazor.draw`, in pure Python.

Nodes go to rows by longest path from the sources (a source used late, like a parameter,
moves down next to its first user); an edge that spans several rows runs through narrow
*waypoints*, one per row, so that it bends around the boxes between; a few barycentre
sweeps order each row to cut crossings; then each box moves towards the mean of its
neighbours' x without overlapping the next box. Every step is linear in nodes plus
waypoints (times a log for the sorts), so a ViT of hundreds of nodes lays out at once.

Example:
    >>> plan = layout([(80, 30), (60, 30), (60, 30), (80, 30)], [(0, 1), (0, 2), (1, 3), (2, 3)])
    >>> [round(b.y) for b in plan.boxes]
    [35, 101, 101, 167]
    >>> plan.boxes[1].x < plan.boxes[2].x
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

__all__ = ["Box", "Layout", "layout"]

MARGIN = 20.0
H_GAP = 24.0  # between boxes of one row
V_GAP = 36.0  # between rows: room for the edges' curves
WAYPOINT_WIDTH = 10.0
SWEEPS = 4
# Beyond this many waypoints edges are drawn straight: a graph that large is not read by
# eye anyway, and the layout should stay quick.
MAX_WAYPOINTS = 200_000


@dataclass(frozen=True)
class Box:
    """A placed node: centre (``x``, ``y``), width ``w`` and height ``h``."""

    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class Layout:
    """Boxes per node, a route (points from source to target) per edge, and the extent."""

    boxes: tuple[Box, ...]
    routes: tuple[tuple[tuple[float, float], ...], ...]
    width: float
    height: float


def _rows(n: int, edges: Sequence[tuple[int, int]]) -> list[int]:
    """Longest-path row per node; a source moves down to just above its highest user."""
    preds: list[list[int]] = [[] for _ in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    for u, v in edges:
        if not 0 <= u < v < n:
            raise ValueError(f"edge {(u, v)} does not run forward between nodes 0..{n - 1}")
        preds[v].append(u)
        succs[u].append(v)
    row = [0] * n
    for v in range(n):
        if preds[v]:
            row[v] = max(row[u] for u in preds[v]) + 1
    for v in range(n):
        if not preds[v] and succs[v]:
            row[v] = min(row[s] for s in succs[v]) - 1
    low = min(row, default=0)
    return [r - low for r in row]


class _Grid:
    """Items (nodes, then waypoints) per row, with their neighbours one row up and down."""

    def __init__(self, sizes: Sequence[tuple[float, float]], row: list[int],
                 edges: Sequence[tuple[int, int]]) -> None:
        self.width = [float(w) for w, _ in sizes]
        self.row = list(row)
        self.up: list[list[int]] = [[] for _ in sizes]
        self.down: list[list[int]] = [[] for _ in sizes]
        self.paths: list[list[int]] = []
        span = sum(max(0, row[v] - row[u] - 1) for u, v in edges)
        for u, v in edges:
            chain = [u]
            if span <= MAX_WAYPOINTS:
                for r in range(row[u] + 1, row[v]):
                    chain.append(self._add(r))
            chain.append(v)
            for a, b in pairwise(chain):
                self.down[a].append(b)
                self.up[b].append(a)
            self.paths.append(chain)
        self.rows: list[list[int]] = [[] for _ in range(max(self.row, default=-1) + 1)]
        for item, r in enumerate(self.row):  # nodes in graph order, then waypoints
            self.rows[r].append(item)

    def _add(self, r: int) -> int:
        self.width.append(WAYPOINT_WIDTH)
        self.row.append(r)
        self.up.append([])
        self.down.append([])
        return len(self.row) - 1


def _order(grid: _Grid) -> None:
    """Barycentre sweeps, down then up: sort each row by the mean position of the items
    it connects to in the row just swept (a stable sort keeps ties in graph order)."""
    pos = [0.0] * len(grid.row)
    for items in grid.rows:
        for i, item in enumerate(items):
            pos[item] = float(i)
    for sweep in range(SWEEPS):
        downward = sweep % 2 == 0
        rows = range(1, len(grid.rows)) if downward else range(len(grid.rows) - 2, -1, -1)
        for r in rows:
            near = grid.up if downward else grid.down

            def key(item: int, near: list[list[int]] = near) -> float:
                links = near[item]
                return sum(pos[o] for o in links) / len(links) if links else pos[item]

            grid.rows[r].sort(key=key)
            for i, item in enumerate(grid.rows[r]):
                pos[item] = float(i)


def _spread(items: list[int], want: list[float], width: list[float]) -> list[float]:
    """x per item, in order, as close to ``want`` as boxes that may not overlap allow:
    the mean of a left-to-right and a right-to-left packing (both keep the gaps, so their
    mean does too)."""
    n = len(items)
    left = [0.0] * n
    right = [0.0] * n
    for i in range(n):
        gap = (width[items[i - 1]] + width[items[i]]) / 2 + H_GAP if i else 0.0
        left[i] = max(want[i], left[i - 1] + gap) if i else want[i]
    for i in range(n - 1, -1, -1):
        gap = (width[items[i + 1]] + width[items[i]]) / 2 + H_GAP if i < n - 1 else 0.0
        right[i] = min(want[i], right[i + 1] - gap) if i < n - 1 else want[i]
    return [(a + b) / 2 for a, b in zip(left, right, strict=True)]


def _place(grid: _Grid) -> list[float]:
    """x per item: rows packed and centred, then moved towards their neighbours' mean x,
    down the rows, up, and down again."""
    x = [0.0] * len(grid.row)
    for items in grid.rows:
        packed = _spread(items, [0.0] * len(items), grid.width)
        for item, at in zip(items, packed, strict=True):
            x[item] = at
    for sweep in range(3):
        downward = sweep % 2 == 0
        rows = range(1, len(grid.rows)) if downward else range(len(grid.rows) - 2, -1, -1)
        for r in rows:
            items = grid.rows[r]
            want = []
            for item in items:
                links = grid.up[item] if downward else grid.up[item] + grid.down[item]
                want.append(sum(x[o] for o in links) / len(links) if links else x[item])
            for item, at in zip(items, _spread(items, want, grid.width), strict=True):
                x[item] = at
    return x


def layout(sizes: Sequence[tuple[float, float]], edges: Sequence[tuple[int, int]]) -> Layout:
    """Lay out nodes of the given (width, height) top to bottom; every edge ``(u, v)``
    must have ``u < v`` (nodes in topological order, as an fx graph lists them)."""
    grid = _Grid(sizes, _rows(len(sizes), edges), edges)
    _order(grid)
    x = _place(grid)
    row_h = max((h for _, h in sizes), default=0.0) + V_GAP
    left = min((x[i] - grid.width[i] / 2 for i in range(len(x))), default=0.0)
    right = max((x[i] + grid.width[i] / 2 for i in range(len(x))), default=0.0)
    shift = MARGIN - left

    def mid(item: int) -> float:  # boxes of one row share a centre line
        return MARGIN + row_h * grid.row[item] + (row_h - V_GAP) / 2

    boxes = tuple(Box(x[i] + shift, mid(i), float(w), float(h)) for i, (w, h) in enumerate(sizes))
    routes = []
    for chain in grid.paths:
        src, dst = boxes[chain[0]], boxes[chain[-1]]
        points = [(src.x, src.y + src.h / 2)]
        points += [(x[w] + shift, mid(w)) for w in chain[1:-1]]
        points.append((dst.x, dst.y - dst.h / 2))
        routes.append(tuple(points))
    height = MARGIN * 2 + row_h * len(grid.rows) - V_GAP
    return Layout(boxes, tuple(routes), right - left + 2 * MARGIN, max(height, 2 * MARGIN))
