"""Sample orders for the customs plugin's tests (a module of its own name: plugins share pytest's path)."""

from __future__ import annotations

import copy
from typing import Any

from guiju_customs.order import uscc_problem

#: A valid unified social credit code (GB 32100-2015 check character).
USCC = "91350100M000100Y43"
assert uscc_problem(USCC) is None

CONSIGNEE_ZH = "莱茵家居用品有限公司"
CONSIGNOR_ZH = "深圳市远航贸易有限公司"

ORDER: dict[str, Any] = {
    "order_number": "SO-2026-0042",
    "order_date": "2026-03-02",
    "consignor_name_zh": CONSIGNOR_ZH,
    "consignor_name_en": "Shenzhen Yuanhang Trading Co., Ltd.",
    "consignor_address": "深圳市南山区科技园南区 A 栋 1201",
    "consignor_uscc": USCC,
    "consignee_name": "Rheinland Haushaltswaren GmbH",
    "consignee_name_zh": CONSIGNEE_ZH,
    "consignee_address": "Hafenstraße 12, 20457 Hamburg",
    "consignee_country": "DE",
    "currency": "USD",
    "incoterm": "CIF",
    "incoterm_place": "Hamburg",
    "freight": "350.00",
    "insurance": {"amount": 1250, "currency": "USD"},
    "transport_mode": "sea",
    "transport_name": "COSCO HAMBURG / 042W",
    "exit_customs": "大鹏海关 5316",
    "departure_port": "盐田 Yantian",
    "destination_port": "Hamburg",
    "packages": 12,
    "package_kind": "纸制或纤维板制盒/箱",
    "total_amount": "4795.00",
    "marks": "RH/HAMBURG/C1-12",
    "lines": [
        {
            "hs_code": "8516500000",
            "name_zh": "微波炉",
            "name_en": "Microwave oven",
            "declared_elements": "1|0|加热食品|远航牌|MW-20",
            "quantity": 100,
            "unit": "台",
            "unit_price": "45.50",
            "amount": "4550.00",
            "net_weight_kg": 1200,
            "gross_weight_kg": 1350,
            "packages": 10,
            "source_region": "深圳特区",
        },
        {
            "hs_code": "8509.40.0000",
            "name_zh": "食品研磨机",
            "name_en": "Food grinder",
            "declared_elements": "1|0|研磨食品|远航牌|FG-3",
            "quantity": 20,
            "unit": "台",
            "unit_price": 12.25,
            "amount": 245,
            "net_weight_kg": 40.5,
            "gross_weight_kg": 48,
            "packages": 2,
            "source_region": "深圳特区",
        },
    ],
}


def order(**changes: Any) -> dict[str, Any]:
    """A deep copy of :data:`ORDER` with ``changes``."""
    values = copy.deepcopy(ORDER)
    values.update(changes)
    return values


def large_order(lines: int = 200) -> dict[str, Any]:
    """An order of ``lines`` lines whose amounts and totals add up."""
    rows = []
    for number in range(1, lines + 1):
        quantity = number % 17 + 1
        price = f"{number % 50 + 1}.{number % 100:02d}"
        rows.append(
            {
                "hs_code": "8516500000" if number % 2 else "6109100000",
                "name_zh": f"商品{number}号",
                "name_en": f"Article {number}",
                "declared_elements": f"1|0|用途{number}|品牌|型号-{number}",
                "quantity": quantity,
                "unit": "件",
                "unit_price": price,
                "net_weight_kg": "1.5",
                "gross_weight_kg": "1.75",
                "packages": 1,
            }
        )
    return order(lines=rows, total_amount=None, packages=lines)
