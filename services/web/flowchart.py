"""Flowcharts: a procedure's steps laid out in layers, top to bottom, drawn as inline SVG.

The input is a small neutral graph (:class:`FlowGraph`): nodes with a number, a name, an owner role
label and a kind; edges with a label and a kind (``normal``, ``condition``, ``exception``,
``return``). The service that knows procedures builds it; this module knows nothing of them.

The layout is a compact layered (Sugiyama) layout, shaped by what a flowchart of an SOP must look like
on a phone:

1. cycles are broken by a depth-first search (an edge back to a step on the search path is drawn as
   a return, dashed, on the left, never laid out);
2. layers by longest path from the start, so a step sits below everything that leads to it;
3. edges that skip layers get dummy points, one per layer, so that they are routed around steps;
4. the order within a layer by barycenter sweeps (down and up), then the main path (the first way
   out of every step, from the start) is pinned to the first column, so it reads as one column;
5. coordinates on a grid of columns; exception paths (lane ``exception``) stack in a column of their
   own to the right of the main flow, each next to the step it leaves.

:func:`layout` gives every node its box and every edge its polyline; ``web/flowchart.html`` draws them.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field

NODE_WIDTH = 240
STEP_HEIGHT = 76
EXCEPTION_HEIGHT = 60
BAR_HEIGHT = 32
GAP_X = 40
GAP_Y = 56
MARGIN = 8
RETURN_GUTTER = 12  # per return edge, left of the first column
NAME_WIDTH = NODE_WIDTH - 24
LABEL_WIDTH = 196

NODE_KINDS = frozenset({"step", "decision", "approval", "wait", "action", "split", "join", "exception"})
EDGE_KINDS = frozenset({"normal", "condition", "exception", "return"})
STATES = frozenset({"done", "current", "waiting", "skipped", "overdue"})
BARS = frozenset({"split", "join"})


@dataclass(frozen=True)
class FlowNode:
    """A box of the chart: a step (``number`` shown), a split/join bar, or an exception kind."""

    key: str
    name: str
    number: int | None = None
    role: str = ""  # who does it, as shown ("店员"), or a short second line for an exception
    kind: str = "step"
    href: str | None = None
    state: str | None = None  # a run's state of the step, if the chart shows a run
    lane: str = "main"  # "main", or "exception": drawn in the column right of the main flow

    def __post_init__(self) -> None:
        if self.kind not in NODE_KINDS:
            raise ValueError(f"unknown node kind {self.kind!r}")
        if self.state is not None and self.state not in STATES:
            raise ValueError(f"unknown state {self.state!r}")


@dataclass(frozen=True)
class FlowEdge:
    source: str
    target: str
    label: str = ""
    kind: str = "normal"

    def __post_init__(self) -> None:
        if self.kind not in EDGE_KINDS:
            raise ValueError(f"unknown edge kind {self.kind!r}")


@dataclass(frozen=True)
class FlowGraph:
    """Nodes in reading order (the start first) and edges in preference order (the main way first)."""

    nodes: tuple[FlowNode, ...]
    edges: tuple[FlowEdge, ...] = ()


@dataclass(frozen=True)
class PlacedNode:
    node: FlowNode
    x: float
    y: float
    width: float
    height: float
    lines: tuple[str, ...]  # the name, wrapped to at most two lines

    @property
    def cx(self) -> float:
        return self.x + self.width / 2

    @property
    def cy(self) -> float:
        return self.y + self.height / 2

    @property
    def right(self) -> float:
        return self.x + self.width

    @property
    def bottom(self) -> float:
        return self.y + self.height

    @property
    def truncated(self) -> bool:
        return "".join(self.lines).rstrip("…") != self.node.name


@dataclass(frozen=True)
class PlacedEdge:
    edge: FlowEdge
    points: tuple[tuple[float, float], ...]
    label: str = ""  # shortened to fit; the full label is edge.label
    label_x: float = 0
    label_y: float = 0
    label_width: float = 0
    back: bool = False  # drawn back up to an earlier step

    @property
    def path(self) -> str:
        return "M" + " L".join(f"{x:g},{y:g}" for x, y in self.points)

    @property
    def dashed(self) -> bool:
        return self.back or self.edge.kind in {"exception", "return"}


@dataclass(frozen=True)
class Flowchart:
    nodes: tuple[PlacedNode, ...]
    edges: tuple[PlacedEdge, ...]
    width: float
    height: float
    columns: int  # columns of the main flow (the exception lane not counted)
    has_exceptions: bool = False
    states: frozenset[str] = field(default_factory=frozenset)

    @property
    def wide(self) -> bool:
        """Branches more than two wide: shown in a horizontal scroller, the step list carries the phone."""
        return self.columns > 2


# ---------------------------------------------------------------- text


def text_width(text: str, size: float = 16) -> float:
    """An estimate of ``text``'s width in px: full-width characters are one em, others about half."""
    return sum(size if unicodedata.east_asian_width(ch) in "WF" else size * 0.56 for ch in text)


def fit(text: str, width: float, size: float = 16) -> str:
    """``text`` cut to ``width`` px with an ellipsis if it does not fit."""
    if text_width(text, size) <= width:
        return text
    out = ""
    for ch in text:
        if text_width(out + ch + "…", size) > width:
            break
        out += ch
    return out.rstrip() + "…"


def wrap(text: str, width: float, size: float = 16, lines: int = 2) -> tuple[str, ...]:
    """``text`` in at most ``lines`` lines of ``width`` px (breaking at spaces when it can); the last
    line ends with an ellipsis when the text is longer."""
    out: list[str] = []
    rest = text.strip()
    while rest and len(out) < lines - 1:
        if text_width(rest, size) <= width:
            break
        cut = 0
        for i in range(1, len(rest) + 1):
            if text_width(rest[:i], size) > width:
                break
            cut = i
        space = rest.rfind(" ", 0, cut + 1)
        if space > 0 and not any(unicodedata.east_asian_width(c) in "WF" for c in rest[space - 1 : space + 1]):
            cut = space
        out.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        out.append(fit(rest, width, size))
    return tuple(out) or ("",)


# ---------------------------------------------------------------- layout


def _height(node: FlowNode) -> float:
    if node.kind in BARS:
        return BAR_HEIGHT
    return EXCEPTION_HEIGHT if node.kind == "exception" else STEP_HEIGHT


def _split_back_edges(keys: list[str], forward: list[FlowEdge]) -> tuple[list[FlowEdge], list[FlowEdge]]:
    """The edges of a depth-first search from the first node (then from any node not yet seen),
    split into those that go forward and those that close a cycle."""
    out: dict[str, list[FlowEdge]] = defaultdict(list)
    for each in forward:
        out[each.source].append(each)
    state: dict[str, int] = {}  # 1 on the path, 2 done
    back: set[int] = set()
    for root in keys:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(out[root]))]
        while stack:
            key, edges = stack[-1]
            edge: FlowEdge | None = next(edges, None)
            if edge is None:
                state[key] = 2
                stack.pop()
                continue
            seen = state.get(edge.target)
            if seen == 1:
                back.add(id(edge))
            elif seen is None:
                state[edge.target] = 1
                stack.append((edge.target, iter(out[edge.target])))
    return [e for e in forward if id(e) not in back], [e for e in forward if id(e) in back]


def _layers(keys: list[str], edges: list[FlowEdge]) -> dict[str, int]:
    """Longest-path layering of an acyclic graph: each node one layer below its lowest predecessor."""
    incoming: dict[str, int] = dict.fromkeys(keys, 0)
    out: dict[str, list[str]] = defaultdict(list)
    for edge in edges:
        incoming[edge.target] += 1
        out[edge.source].append(edge.target)
    layer = dict.fromkeys(keys, 0)
    ready = [k for k in keys if incoming[k] == 0]
    while ready:
        key = ready.pop(0)
        for target in out[key]:
            layer[target] = max(layer[target], layer[key] + 1)
            incoming[target] -= 1
            if incoming[target] == 0:
                ready.append(target)
    return layer


def _order(rows: list[list[str]], chains: list[tuple[str, ...]], main: set[str], sweeps: int = 4) -> list[list[str]]:
    """The order within each layer: barycenter sweeps over the edges (as chains of consecutive
    layers), then the main path first."""
    down: dict[str, list[str]] = defaultdict(list)
    up: dict[str, list[str]] = defaultdict(list)
    for chain in chains:
        for a, b in itertools.pairwise(chain):
            down[b].append(a)
            up[a].append(b)

    def sweep(neighbours: dict[str, list[str]], indices: range) -> None:
        for i in indices:
            before = rows[i - 1] if neighbours is down else rows[i + 1]
            position = {k: n for n, k in enumerate(before)}
            rank: dict[str, tuple[float, int]] = {}
            for n, key in enumerate(rows[i]):
                found = [position[k] for k in neighbours[key] if k in position]
                rank[key] = (sum(found) / len(found) if found else n, n)
            rows[i] = sorted(rows[i], key=rank.__getitem__)

    for _ in range(sweeps):
        sweep(down, range(1, len(rows)))
        sweep(up, range(len(rows) - 2, -1, -1))
    return [sorted(row, key=lambda k: k not in main) for row in rows]


def layout(graph: FlowGraph) -> Flowchart:
    """Every node's box and every edge's polyline (see the module's notes)."""
    nodes = {n.key: n for n in graph.nodes}
    if len(nodes) != len(graph.nodes):
        raise ValueError("node keys must be unique")
    for edge in graph.edges:
        if edge.source not in nodes or edge.target not in nodes:
            raise ValueError(f"edge {edge.source}->{edge.target} names an unknown node")
    main_keys = [n.key for n in graph.nodes if n.lane == "main"]
    lane_keys = [n.key for n in graph.nodes if n.lane != "main"]
    flow = [
        e
        for e in graph.edges
        if e.kind in {"normal", "condition"} and nodes[e.source].lane == "main" and nodes[e.target].lane == "main"
    ]
    forward, back = _split_back_edges(main_keys, flow)
    layer_of = _layers(main_keys, forward)
    depth = max(layer_of.values(), default=-1) + 1
    rows: list[list[str]] = [[] for _ in range(depth)]
    for key in main_keys:
        rows[layer_of[key]].append(key)

    # Long edges get a dummy point per layer they cross.
    chains: list[tuple[str, ...]] = []
    for n, edge in enumerate(forward):
        chain: list[str] = [edge.source]
        for layer in range(layer_of[edge.source] + 1, layer_of[edge.target]):
            dummy = f"\x00{n}.{layer}"
            rows[layer].append(dummy)
            chain.append(dummy)
        chains.append((*chain, edge.target))

    # The main path: from the start, the first way on, every time.
    first_way: dict[str, tuple[str, ...]] = {}
    for chain_ in chains:
        first_way.setdefault(chain_[0], chain_)
    main: set[str] = set()
    walker: str | None = main_keys[0] if main_keys else None
    while walker is not None and walker not in main:
        main.add(walker)
        way = first_way.get(walker)
        if way is None:
            break
        main.update(way[1:-1])
        walker = way[-1]
    rows = _order(rows, chains, main)
    columns = max((len(r) for r in rows), default=1)

    # Coordinates.
    returns = [*back, *(e for e in graph.edges if e.kind == "return" and nodes[e.source].lane == "main")]
    gutter = RETURN_GUTTER * (len(returns) + 1) if returns else 0
    left = MARGIN + gutter
    column_x = [float(left + c * (NODE_WIDTH + GAP_X)) for c in range(columns)]
    placed: dict[str, PlacedNode] = {}
    points: dict[str, tuple[float, float, float]] = {}  # dummy -> x, top, bottom
    y = float(MARGIN)
    for row in rows:
        height = max((_height(nodes[k]) for k in row if k in nodes), default=0.0)
        for column, key in enumerate(row):
            if key not in nodes:
                points[key] = (column_x[column] + NODE_WIDTH / 2, y, y + height)
                continue
            node = nodes[key]
            placed[key] = _place(node, column_x[column], y)
        y += height + GAP_Y
    _stretch_bars(rows, placed, chains, column_x)

    # The exception lane: next to the step it leaves, stacked below whatever is already there.
    lane_x = left + columns * (NODE_WIDTH + GAP_X) + GAP_X / 2
    lane_bottom = float(MARGIN - GAP_Y)
    lane_next: dict[str, list[str]] = defaultdict(list)
    for edge in graph.edges:
        if nodes[edge.source].lane != "main" and nodes[edge.target].lane != "main":
            lane_next[edge.source].append(edge.target)
    entries = sorted(
        (e for e in graph.edges if e.kind == "exception" and e.source in placed and e.target in lane_keys),
        key=lambda e: (placed[e.source].y, placed[e.source].x),
    )
    roots = [e.target for e in entries] + lane_keys
    for root in roots:
        if root in placed:
            continue
        source = next((e.source for e in entries if e.target == root), None)
        top = max(placed[source].y if source else MARGIN, lane_bottom + GAP_Y / 2)
        at: str | None = root
        while at is not None and at not in placed:
            placed[at] = _place(nodes[at], lane_x, top)
            top = placed[at].bottom + GAP_Y / 2
            lane_bottom = placed[at].bottom
            at = next((k for k in lane_next[at] if k not in placed), None)

    # Edges.
    drawn: list[PlacedEdge] = []
    for way, edge in zip(chains, forward, strict=True):
        drawn.append(_forward(edge, way, placed, points))
    for n, edge in enumerate(returns):
        drawn.append(_return(edge, placed[edge.source], placed[edge.target], left - RETURN_GUTTER * (n + 1)))
    occupied = _rows_right_of(placed)
    for edge in graph.edges:
        if edge in flow or (edge.kind == "return" and nodes[edge.source].lane == "main"):
            continue
        drawn.append(_side(edge, placed, occupied, lane_x))

    drawn = _spread_labels(drawn)
    width = max((p.right for p in placed.values()), default=0) + MARGIN
    height = max((p.bottom for p in placed.values()), default=0) + MARGIN
    for edge_drawn in drawn:
        for px, py in edge_drawn.points:
            width = max(width, px + MARGIN)
            height = max(height, py + MARGIN)
    return Flowchart(
        nodes=tuple(placed[n.key] for n in graph.nodes),
        edges=tuple(drawn),
        width=width,
        height=height,
        columns=columns,
        has_exceptions=bool(lane_keys),
        states=frozenset(n.state for n in graph.nodes if n.state),
    )


def _place(node: FlowNode, x: float, y: float) -> PlacedNode:
    lines = (fit(node.name, NAME_WIDTH, 14),) if node.kind in BARS else wrap(node.name, NAME_WIDTH - 28)
    return PlacedNode(node, x, y, NODE_WIDTH, _height(node), lines)


def _stretch_bars(
    rows: list[list[str]], placed: dict[str, PlacedNode], chains: list[tuple[str, ...]], column_x: list[float]
) -> None:
    """A split or join bar spans the columns of the branches it starts or ends (never a column
    another node of its layer holds)."""
    column_of = {k: c for row in rows for c, k in enumerate(row)}
    for row in rows:
        for key in row:
            bar = placed.get(key)
            if bar is None or bar.node.kind not in BARS:
                continue
            near = [c[1] if c[0] == key else c[-2] for c in chains if key in (c[0], c[-1]) and len(c) > 1]
            reach = max((column_of[k] for k in near), default=column_of[key])
            last = column_of[key]
            while last < reach and _free(row, last + 1):
                last += 1
            right = column_x[last] + NODE_WIDTH
            placed[key] = PlacedNode(bar.node, bar.x, bar.y, right - bar.x, bar.height, bar.lines)


def _free(row: list[str], column: int) -> bool:
    return column >= len(row) or row[column].startswith("\x00")


def _rows_right_of(placed: dict[str, PlacedNode]) -> dict[str, bool]:
    """Whether another main-lane box sits to the right of a box in its row."""
    rightmost: dict[float, float] = {}  # a row's top -> the left edge of its rightmost main box
    for box in placed.values():
        if box.node.lane == "main":
            rightmost[box.y] = max(rightmost.get(box.y, box.x), box.x)
    return {key: box.x < rightmost.get(box.y, box.x) for key, box in placed.items()}


def _orthogonal(start: tuple[float, float], end: tuple[float, float]) -> list[tuple[float, float]]:
    x1, x2, y2 = start[0], end[0], end[1]
    if x1 == x2:
        return [end]
    middle = y2 - GAP_Y / 2
    return [(x1, middle), (x2, middle), end]


def _edge(
    edge: FlowEdge,
    line: list[tuple[float, float]] | tuple[tuple[float, float], ...],
    x: float,
    y: float,
    back: bool = False,
) -> PlacedEdge:
    """The edge along ``line``, its label (if any) written from (``x``, ``y``)."""
    if not edge.label:
        return PlacedEdge(edge, tuple(line), back=back)
    text = fit(edge.label, LABEL_WIDTH, 14)
    return PlacedEdge(edge, tuple(line), text, x, y, text_width(text, 14) + 8, back)


def _forward(
    edge: FlowEdge,
    chain: tuple[str, ...],
    placed: dict[str, PlacedNode],
    points: dict[str, tuple[float, float, float]],
) -> PlacedEdge:
    source, target = placed[chain[0]], placed[chain[-1]]
    at = (source.cx if source.node.kind not in BARS else _bar_x(source, chain[1], placed, points), source.bottom)
    line = [at]
    first_hop: tuple[float, float] | None = None
    for dummy in chain[1:-1]:
        x, top, bottom = points[dummy]
        line += _orthogonal(line[-1], (x, top))
        first_hop = first_hop or (x, top)
        line.append((x, bottom))
    end_x = target.cx if target.node.kind not in BARS else min(max(line[-1][0], target.x + 16), target.right - 16)
    line += _orthogonal(line[-1], (end_x, target.y))
    # The label sits beside the first stretch down after the edge leaves its source (where the
    # ways of a decision have parted), in the gap above the next layer.
    label_x, label_y = first_hop or (end_x, target.y)
    return _edge(edge, line, label_x + 6, label_y - 10)


def _spread_labels(edges: list[PlacedEdge]) -> list[PlacedEdge]:
    """Labels that would cover one another: a later one moves up a line, then to the left of its edge."""
    taken: list[tuple[float, float, float]] = []  # x, y, width
    out = []
    for edge in edges:
        if not edge.label:
            out.append(edge)
            continue
        x, y = edge.label_x, edge.label_y
        for candidate in ((x, y), (x, y - 22), (x - edge.label_width - 12, y), (x - edge.label_width - 12, y - 22)):
            if not any(
                abs(candidate[1] - ty) < 22 and candidate[0] < tx + tw and tx < candidate[0] + edge.label_width
                for tx, ty, tw in taken
            ):
                x, y = candidate
                break
        taken.append((x, y, edge.label_width))
        out.append(PlacedEdge(edge.edge, edge.points, edge.label, x, y, edge.label_width, edge.back))
    return out


def _bar_x(
    bar: PlacedNode, next_key: str, placed: dict[str, PlacedNode], points: dict[str, tuple[float, float, float]]
) -> float:
    x = placed[next_key].cx if next_key in placed else points[next_key][0]
    return min(max(x, bar.x + 16), bar.right - 16)


def _return(edge: FlowEdge, source: PlacedNode, target: PlacedNode, x: float) -> PlacedEdge:
    """Back up the left side: out of the source's left, up the gutter, into the target's left."""
    line = ((source.x, source.cy + 8), (x, source.cy + 8), (x, target.cy - 8), (target.x, target.cy - 8))
    # The label sits in the gap under the source, at its left.
    return _edge(edge, line, source.x + 4, source.bottom + 18, back=True)


def _side(edge: FlowEdge, placed: dict[str, PlacedNode], occupied: dict[str, bool], lane_x: float) -> PlacedEdge:
    """An edge to or from the exception lane (or within it)."""
    source, target = placed[edge.source], placed[edge.target]
    if source.node.lane != "main" and target.node.lane != "main":  # down the lane
        return PlacedEdge(edge, ((source.cx, source.bottom), (target.cx, target.y)))
    if source.node.lane == "main":  # out to the lane
        side_x = lane_x - GAP_X / 2 + 4
        if occupied.get(edge.source):
            start = [
                (source.right - 24, source.bottom),
                (source.right - 24, source.bottom + 12),
                (side_x, source.bottom + 12),
            ]
        else:
            start = [(source.right, source.cy - 8), (side_x, source.cy - 8)]
        line = [*start, (side_x, target.cy), (target.x, target.cy)]
        return _edge(edge, line, target.x, target.y - 10)
    # Back from the lane.
    side_x = lane_x - GAP_X / 2 - 6
    end = (
        [(side_x, target.bottom + 20), (target.right - 40, target.bottom + 20), (target.right - 40, target.bottom)]
        if occupied.get(edge.target)
        else [(side_x, target.cy + 8), (target.right, target.cy + 8)]
    )
    line = [(source.x, source.cy + 8), *([(side_x, source.cy + 8)] if source.x > side_x else []), *end]
    return _edge(edge, line, source.x, source.bottom + 18)
