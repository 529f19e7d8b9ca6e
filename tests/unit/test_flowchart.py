"""The flowchart's layered layout and its SVG: linear, branching, parallel and exception procedures
come out with no boxes on top of each other, every edge drawn, states shown and text escaped."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import msgspec
import pytest
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from services.sops.definition import Definition
from services.sops.procedures.conditions import plain_condition
from services.sops.procedures.flow import flow_graph, numbered_steps
from services.web.flowchart import (
    GAP_X,
    NODE_WIDTH,
    Flowchart,
    FlowEdge,
    FlowGraph,
    FlowNode,
    layout,
    text_width,
    wrap,
)

TEMPLATES = Path(__file__).resolve().parents[2] / "services" / "web" / "templates"


def task(key: str, next_key: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "task",
        "key": key,
        "title": key.title(),
        "owner": {"kind": "role", "role": "member"},
        "next": next_key,
        **extra,
    }


def definition(start: str, *steps: dict[str, Any]) -> Definition:
    return msgspec.convert({"start": start, "steps": list(steps)}, type=Definition)


LINEAR = definition("a", task("a", "b"), task("b", "c"), task("c"))
BRANCHING = definition(
    "receive",
    task("receive", "check"),
    {
        "kind": "decision",
        "key": "check",
        "title": "Check the amount",
        "branches": [{"when": "data.amount > 5000", "next": "approve"}],
        "default": "ship",
    },
    {
        "kind": "approval",
        "key": "approve",
        "title": "Approve",
        "owner": {"kind": "role", "role": "manager"},
        "next": "ship",
        "on_reject": {"goto": "receive"},
    },
    task("ship"),
)
PARALLEL = definition(
    "start",
    task("start", "split"),
    {"kind": "parallel", "key": "split", "title": "Split", "branches": ["pick", "invoice"], "join": "join"},
    task("pick", "join"),
    task("invoice", "join"),
    {"kind": "join", "key": "join", "title": "Join", "next": "ship"},
    task("ship"),
)
EXCEPTIONS = definition(
    "pick",
    task(
        "pick",
        "pack",
        exceptions=[
            {"key": "missing", "label": "Out of stock", "fallback": ["call", "refund"], "then": "resume"},
            {"key": "broken", "label": "Broken <goods>", "then": "abort"},
        ],
    ),
    task("pack", "ship", exceptions=[{"key": "late", "label": "Courier late", "then": "resume"}]),
    task("ship"),
    task("call"),
    task("refund"),
)
WIDE = definition(
    "start",
    task("start", "split"),
    {"kind": "parallel", "key": "split", "title": "Split", "branches": ["a", "b", "c"], "join": "join"},
    task("a", "join"),
    task("b", "join"),
    task("c", "join"),
    {"kind": "join", "key": "join", "title": "Join"},
)
ALL = {"linear": LINEAR, "branching": BRANCHING, "parallel": PARALLEL, "exceptions": EXCEPTIONS, "wide": WIDE}


def chart_of(d: Definition, **kwargs: Any) -> Flowchart:
    return layout(flow_graph(d, "en", href=lambda key: f"/sops/p/steps/{key}", **kwargs))


def overlap(a: Any, b: Any) -> bool:
    return a.x < b.right and b.x < a.right and a.y < b.bottom and b.y < a.bottom


@pytest.mark.parametrize("name", list(ALL))
def test_no_boxes_overlap_and_every_edge_is_drawn(name: str) -> None:
    d = ALL[name]
    graph = flow_graph(d, "en")
    chart = layout(graph)
    assert {p.node.key for p in chart.nodes} == {n.key for n in graph.nodes}
    for a, b in itertools.combinations(chart.nodes, 2):
        assert not overlap(a, b), (a.node.key, b.node.key)
    assert sorted((e.edge.source, e.edge.target) for e in chart.edges) == sorted(
        (e.source, e.target) for e in graph.edges
    )
    boxes = {p.node.key: p for p in chart.nodes}
    for e in chart.edges:
        assert len(e.points) >= 2
        # Segments are straight up/down or across (orthogonal routing), and inside the drawing.
        for (x1, y1), (x2, y2) in itertools.pairwise(e.points):
            assert x1 == x2 or y1 == y2
        for x, y in e.points:
            assert 0 <= x <= chart.width and 0 <= y <= chart.height
        # It ends on its target's border.
        tx, ty = e.points[-1]
        box = boxes[e.edge.target]
        assert box.x <= tx <= box.right and box.y <= ty <= box.bottom
    for p in chart.nodes:
        assert p.height >= 44 or p.node.kind in {"split", "join"}
        assert p.width <= 280 or p.node.kind in {"split", "join"}


def test_a_linear_procedure_is_one_column_top_to_bottom() -> None:
    chart = chart_of(LINEAR)
    xs = {p.x for p in chart.nodes}
    ys = [p.y for p in chart.nodes]
    assert len(xs) == 1 and ys == sorted(ys) and len(set(ys)) == 3
    assert chart.columns == 1 and not chart.wide
    assert [p.node.number for p in chart.nodes] == [1, 2, 3]


def test_a_branch_sits_beside_the_main_path_and_a_rejection_returns_on_the_left() -> None:
    chart = chart_of(BRANCHING)
    boxes = {p.node.key: p for p in chart.nodes}
    main_x = boxes["receive"].x
    assert boxes["check"].x == main_x and boxes["approve"].x == main_x and boxes["ship"].x == main_x
    assert boxes["receive"].y < boxes["check"].y < boxes["approve"].y < boxes["ship"].y
    labels = {(e.edge.source, e.edge.target): e for e in chart.edges}
    assert labels[("check", "approve")].edge.label == "amount > 5000"
    assert labels[("check", "ship")].edge.label == "Otherwise"
    back = labels[("approve", "receive")]
    assert back.dashed and back.back
    assert min(x for x, _ in back.points) < main_x  # up the gutter, left of the steps
    assert "Back to step 1" in back.edge.label
    # The default route skips a layer: it bends around the approval, not through it.
    skip = labels[("check", "ship")]
    assert not any(
        boxes["approve"].x < x < boxes["approve"].right and boxes["approve"].y < y < boxes["approve"].bottom
        for x, y in skip.points
    )


def test_parallel_branches_sit_side_by_side_between_two_bars() -> None:
    chart = chart_of(PARALLEL)
    boxes = {p.node.key: p for p in chart.nodes}
    assert boxes["pick"].y == boxes["invoice"].y
    assert abs(boxes["invoice"].x - boxes["pick"].x) == NODE_WIDTH + GAP_X
    for bar in ("split", "join"):
        assert boxes[bar].node.kind == ("split" if bar == "split" else "join")
        assert boxes[bar].x <= min(boxes["pick"].x, boxes["invoice"].x)
        assert boxes[bar].right >= max(boxes["pick"].right, boxes["invoice"].right)
        assert boxes[bar].node.number is None
    assert boxes["split"].node.name == "At the same time"
    assert chart.columns == 2 and not chart.wide
    assert [n.number for n in numbered_steps(PARALLEL, "en") if n.number] == [1, 2, 3, 4]
    assert [n.step.key for n in numbered_steps(PARALLEL, "en")] == ["start", "split", "pick", "invoice", "join", "ship"]


def test_more_than_two_branches_make_a_wide_chart() -> None:
    assert chart_of(WIDE).wide


def test_exception_paths_go_to_the_right_dashed_and_return() -> None:
    chart = chart_of(EXCEPTIONS)
    boxes = {p.node.key: p for p in chart.nodes}
    main_right = max(boxes[k].right for k in ("pick", "pack", "ship"))
    for key in ("pick!missing", "pick!broken", "pack!late", "call", "refund"):
        assert boxes[key].x > main_right, key
        assert boxes[key].node.lane == "exception"
    assert boxes["pick!missing"].node.name == "⚠ Problem: Out of stock"
    assert boxes["pick!missing"].node.role == "Back to step 1"
    assert boxes["pick!broken"].node.role == "Then the run stops"
    assert boxes["pick!missing"].y == boxes["pick"].y  # level with the step it leaves
    assert boxes["call"].y > boxes["pick!missing"].y and boxes["refund"].y > boxes["call"].y
    edges = {(e.edge.source, e.edge.target): e for e in chart.edges}
    assert edges[("pick", "pick!missing")].dashed and edges[("pick", "pick!missing")].edge.kind == "exception"
    assert edges[("refund", "pick")].edge.kind == "return" and edges[("refund", "pick")].dashed
    assert ("pick!broken", "pick") not in edges  # an aborting problem does not come back
    assert ("pack!late", "pack") in edges  # no fallback steps: straight back
    # Fallback steps are numbered after the main path.
    assert [(n.number, n.step.key) for n in numbered_steps(EXCEPTIONS, "en")] == [
        (1, "pick"),
        (2, "pack"),
        (3, "ship"),
        (4, "call"),
        (5, "refund"),
    ]


def test_labels_are_wrapped_and_cut() -> None:
    assert wrap("Short", 200) == ("Short",)
    lines = wrap("Check the customer's address and phone number against the order form", 190)
    assert len(lines) == 2 and all(text_width(line) <= 190 for line in lines) and lines[1].endswith("…")
    chinese = wrap("接收订单并核对客户信息与收货地址是否完整正确然后通知仓库", 190)
    assert len(chinese) == 2 and chinese[1].endswith("…")
    assert plain_condition("data.amount > 5000 and record.vip == true") == "amount > 5000 and vip = true"


def render(chart: Flowchart, label: str = "Flowchart") -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
    env.globals["_"] = lambda text, **kw: text.format(**kw) if kw else text
    return env.get_template("web/flowchart.html").render(chart=chart, chart_label=label)


def test_the_svg_shows_states_links_and_escapes_text() -> None:
    chart = chart_of(
        EXCEPTIONS,
        states={"pick": "done", "pack": "current", "ship": "overdue", "call": "skipped", "refund": "waiting"},
    )
    html = render(chart, "Flowchart of <Ship>")
    assert 'aria-label="Flowchart of &lt;Ship&gt;"' in html
    assert "Broken &lt;goods&gt;" in html and "<goods>" not in html
    assert html.count('aria-current="step"') == 1
    current = html.split('aria-current="step"')[0].rsplit("<a ", 1)[1]
    assert 'href="/sops/p/steps/pack"' in current
    for text in ("✓ Done", "▶ In progress", "! Overdue", "– Skipped", "⏱ Waiting"):
        assert text in html
    for key in ("pick", "pack", "ship", "call", "refund"):
        assert f'href="/sops/p/steps/{key}"' in html
    assert html.count('class="fc-edge ') == len(chart.edges) + 3  # every edge, and the legend's three
    assert "state-current" in html and "state-done" in html
    assert "When a problem is reported" in html  # the legend


def test_a_bad_graph_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown node"):
        layout(FlowGraph((FlowNode("a", "A"),), (FlowEdge("a", "b"),)))
    with pytest.raises(ValueError, match="unique"):
        layout(FlowGraph((FlowNode("a", "A"), FlowNode("a", "B"))))
    with pytest.raises(ValueError, match="state"):
        FlowNode("a", "A", state="lost")
    with pytest.raises(ValueError, match="kind"):
        FlowEdge("a", "b", kind="dotted")


def test_a_loop_without_an_approval_is_still_laid_out() -> None:
    graph = FlowGraph(
        (FlowNode("a", "A", 1), FlowNode("b", "B", 2), FlowNode("c", "C", 3)),
        (FlowEdge("a", "b"), FlowEdge("b", "c"), FlowEdge("c", "a", "again", "condition")),
    )
    chart = layout(graph)
    ys = {p.node.key: p.y for p in chart.nodes}
    assert ys["a"] < ys["b"] < ys["c"]
    assert len(chart.edges) == 3


def label_box(e: Any) -> tuple[float, float, float, float]:
    return (e.label_x - 4, e.label_y - 15, e.label_x - 4 + e.label_width, e.label_y + 5)


@pytest.mark.parametrize("name", list(ALL))
def test_edge_labels_never_cover_each_other_or_a_box(name: str) -> None:
    chart = chart_of(ALL[name])
    labels = [label_box(e) for e in chart.edges if e.label]
    for a, b in itertools.combinations(labels, 2):
        assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    for x1, y1, x2, y2 in labels:
        for box in chart.nodes:
            assert not (x1 < box.right and box.x < x2 and y1 < box.bottom and box.y < y2), box.node.key


def test_two_ways_to_the_same_step_share_one_line() -> None:
    d = definition(
        "check",
        {
            "kind": "decision",
            "key": "check",
            "title": "Check",
            "branches": [{"when": "data.amount > 5000", "next": "ship"}],
            "default": "ship",
        },
        task("ship"),
    )
    chart = chart_of(d)
    assert len(chart.edges) == 1 and chart.edges[0].edge.label == "amount > 5000 / Otherwise"


def test_a_very_long_procedure_is_laid_out_without_recursion() -> None:
    count = 1500
    steps = [task(f"s{i}", f"s{i + 1}" if i < count - 1 else None) for i in range(count)]
    chart = chart_of(definition("s0", *steps))
    assert len(chart.nodes) == count and chart.columns == 1
    assert [n.number for n in numbered_steps(definition("s0", *steps), "en")][-1] == count
