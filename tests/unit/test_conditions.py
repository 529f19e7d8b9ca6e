"""A decision's condition in people's words, in Chinese and English: fields by their labels,
operators in words where clearer, a branch's own label first, long labels cut with the full text kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from services.sops.definition import Definition
from services.sops.procedures.conditions import FieldWords, condition_label, field_words
from services.sops.procedures.flow import flow_graph
from services.web.flowchart import LABEL_WIDTH, layout, text_width
from tests.unit.test_flowchart import render

FIELDS = {
    "record.amount": FieldWords("金额"),
    "data.status": FieldWords("状态"),
    "record.vip": FieldWords("VIP 客户"),
    "record.refund": FieldWords("退款金额", currency="CNY"),
}
EN_FIELDS = {
    "record.amount": FieldWords("Amount"),
    "data.status": FieldWords("Status"),
    "record.vip": FieldWords("VIP customer"),
    "record.refund": FieldWords("Refund", currency="USD"),
}


@pytest.mark.parametrize(
    ("expression", "zh", "en"),
    [
        ("record.amount > 1000", "金额 > 1000", "Amount > 1000"),
        ("record.amount >= 1000", "金额 ≥ 1000", "Amount ≥ 1000"),
        ("data.status == '已付款'", "状态 等于 “已付款”", "Status is “已付款”"),
        ("data.status != 'Paid'", "状态 不等于 “Paid”", "Status is not “Paid”"),
        ("record.vip == true", "VIP 客户：是", "VIP customer: yes"),
        ("record.vip != true", "VIP 客户：否", "VIP customer: no"),
        ("record.vip == null", "VIP 客户 为空", "VIP customer is empty"),
        (
            "data.status in ['Paid', 'Sent']",
            "状态 是 “Paid”、“Sent” 之一",
            "Status is one of “Paid”, “Sent”",
        ),
        ("'VIP' in data.tags", "tags 包含 “VIP”", "tags contains “VIP”"),
        (
            "record.amount > 5000 and record.vip == true",
            "金额 > 5000 并且 VIP 客户：是",
            "Amount > 5000 and VIP customer: yes",
        ),
        (
            "(record.amount > 5000 or record.vip == true) and data.status == 'Paid'",
            "(金额 > 5000 或 VIP 客户：是) 并且 状态 等于 “Paid”",
            "(Amount > 5000 or VIP customer: yes) and Status is “Paid”",
        ),
        ("not (record.amount > 5000)", "不满足 (金额 > 5000)", "not (Amount > 5000)"),
        ("today() >= record.end_date", "今天 ≥ end date", "today ≥ end date"),
        ("len(data.items) > 3", "items 的数量 > 3", "number of items > 3"),
        ("record.engagements_24h < record.views_24h * 0.02", "engagements 24h < views 24h × 0.02", None),
        ("record.refund.amount > 20000", "退款金额 > ¥200.00", "Refund > $200.00"),
        ("record.amount >", "amount >", "amount >"),  # cannot be read: shown as written
    ],
)
def test_conditions_are_worded_for_people(expression: str, zh: str, en: str | None) -> None:
    assert condition_label(expression, "zh-CN", FIELDS) == zh
    if en is not None:
        assert condition_label(expression, "en", EN_FIELDS) == en


def test_fields_are_named_by_the_collection_then_the_definition() -> None:
    @dataclass
    class Field:
        key: str
        label: str
        type: str
        currency: str | None = None

    definition = msgspec.convert(
        {
            "start": "fill",
            "data": [{"key": "weight_kg", "type": "number", "label": "重量（公斤）"}],
            "steps": [
                {
                    "kind": "form",
                    "key": "fill",
                    "title": "Fill",
                    "owner": {"kind": "starter"},
                    "fields": [
                        {"key": "amount", "label": "表单金额", "type": "number", "target": "record"},
                        {"key": "note", "label": "备注", "type": "text"},
                    ],
                }
            ],
        },
        type=Definition,
    )
    words = field_words(definition, [Field("amount", "订单金额", "money", "CNY"), Field("city", "城市", "text", "CNY")])
    assert words["record.amount"] == FieldWords("订单金额", "CNY")
    assert words["record.city"] == FieldWords("城市")  # only a money field's amounts are money
    assert words["data.weight_kg"] == FieldWords("重量（公斤）")
    assert words["data.note"] == FieldWords("备注")
    assert condition_label("data.weight_kg > 30", "zh-CN", words) == "重量（公斤） > 30"


def decision(branches: list[dict[str, Any]], **fields: Any) -> Definition:
    task = {"kind": "task", "owner": {"kind": "starter"}}
    return msgspec.convert(
        {
            "start": "check",
            "data": [{"key": "amount", "type": "number", "label": fields.get("label", "Amount")}],
            "steps": [
                {"kind": "decision", "key": "check", "title": "Check", "branches": branches, "default": "small"},
                {**task, "key": "big", "title": "Big"},
                {**task, "key": "small", "title": "Small"},
            ],
        },
        type=Definition,
    )


@pytest.mark.parametrize(
    ("locale", "label", "condition", "otherwise"),
    [("zh-CN", "金额", "金额 > 5000", "否则"), ("en", "Amount", "Amount > 5000", "Otherwise")],
)
def test_the_flowchart_words_its_ways(locale: str, label: str, condition: str, otherwise: str) -> None:
    graph = flow_graph(decision([{"when": "data.amount > 5000", "next": "big"}], label=label), locale)
    labels = {(e.source, e.target): e.label for e in graph.edges}
    assert labels == {("check", "big"): condition, ("check", "small"): otherwise}


def test_a_branch_says_its_own_label_first() -> None:
    graph = flow_graph(decision([{"when": "data.amount > 5000", "next": "big", "label": "大额订单"}]), "zh-CN")
    assert {e.label for e in graph.edges} == {"大额订单", "否则"}


def test_a_long_label_is_cut_and_kept_whole_in_its_title() -> None:
    when = " or ".join(f"data.amount == {n}" for n in range(8))
    chart = layout(flow_graph(decision([{"when": when, "next": "big"}]), "en"))
    edge = next(e for e in chart.edges if e.edge.target == "big")
    assert edge.edge.label.startswith("Amount is 0 or Amount is 1") and edge.edge.label.endswith("Amount is 7")
    assert edge.label.endswith("…") and text_width(edge.label, 14) <= LABEL_WIDTH
    svg = render(chart)
    assert f"<title>{edge.edge.label}</title>" in svg and f">{edge.label}</text>" in svg
