"""An order (or shipment) record read into what the documents need, checked before anything is generated.

:func:`read_order` reads a record's values (flat fields, and ``lines`` as line items), fills in the
exporter's defaults from the plugin's settings, and checks every rule at once: a record with several
problems fails with all of them listed, each at a JSON pointer into the record's values.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import pycountry
from guiju_sdk import ActionFailed

from guiju_customs.hs import hs_code_problem

COMMERCIAL_INVOICE = "commercial_invoice"
PACKING_LIST = "packing_list"
PROFORMA_INVOICE = "proforma_invoice"
EXPORT_DECLARATION = "export_declaration"
KINDS: tuple[str, ...] = (COMMERCIAL_INVOICE, PACKING_LIST, PROFORMA_INVOICE, EXPORT_DECLARATION)

#: ISO 4217 currencies whose minor unit is not the cent (as the records API counts money).
CURRENCY_EXPONENTS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip

#: 运输方式: China Customs' codes of the modes of transport an export uses.
TRANSPORT_MODES = {
    "2": "水路运输",
    "3": "铁路运输",
    "4": "公路运输",
    "5": "航空运输",
    "6": "邮件运输",
    "9": "其他运输",
}
_TRANSPORT_ALIASES = {"sea": "2", "water": "2", "rail": "3", "road": "4", "air": "5", "post": "6", "mail": "6"}

#: 监管方式 (trade mode): the common China Customs codes, shown with their names on the declaration.
TRADE_MODES = {
    "0110": "一般贸易",
    "0130": "易货贸易",
    "0214": "来料加工",
    "0615": "进料对口",
    "1039": "市场采购",
    "3010": "货样广告品",
    "4561": "退运货物",
    "9610": "跨境贸易电子商务",
    "9710": "跨境电子商务企业对企业直接出口",
    "9810": "跨境电子商务出口海外仓",
}
DEFAULT_TRADE_MODE = "0110"

#: Incoterms 2020.
INCOTERMS = frozenset({"EXW", "FCA", "CPT", "CIP", "DAP", "DPU", "DDP", "FAS", "FOB", "CFR", "CIF"})
#: 成交方式: the declaration's codes of the terms a Chinese export declaration accepts.
DECLARATION_TERMS = {"CIF": "1", "CFR": "2", "FOB": "3", "EXW": "7"}

# GB 32100-2015: the unified social credit code (统一社会信用代码), its alphabet and check weights.
_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_USCC_SHAPE = re.compile(rf"[{_USCC_ALPHABET}]{{2}}[0-9]{{6}}[{_USCC_ALPHABET}]{{10}}")
_TRADE_MODE_SHAPE = re.compile(r"[0-9]{4}")
_WEIGHT_QUANTUM = Decimal("0.001")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the record: where (a JSON pointer into its values) and what."""

    pointer: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "message": self.message}


class OrderInvalid(ActionFailed):
    """The record cannot make the documents asked for; ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        listed = "; ".join(f"{p.pointer or '/'}: {p.message}" for p in problems)
        super().__init__(f"the order cannot be documented ({len(problems)} problems): {listed}", retryable=False)
        self.problems = list(problems)


@dataclass(frozen=True)
class Party:
    """A consignor or consignee."""

    name_zh: str
    name_en: str
    address: str
    country: str = ""
    uscc: str = ""

    @property
    def name(self) -> str:
        """The name to print: both when both are known."""
        return " / ".join(n for n in (self.name_zh, self.name_en) if n)


@dataclass(frozen=True)
class Line:
    """One line of goods."""

    number: int
    hs_code: str
    name_zh: str
    name_en: str
    declared_elements: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal
    net_weight: Decimal | None
    gross_weight: Decimal | None
    packages: int | None
    origin_country: str
    destination_country: str
    source_region: str

    @property
    def name(self) -> str:
        return " ".join(n for n in (self.name_en, self.name_zh) if n)


@dataclass(frozen=True)
class Order:
    """What the documents print, read and checked."""

    order_number: str
    invoice_number: str
    contract_number: str
    order_date: dt.date | None
    consignor: Party
    consignee: Party
    customs_broker: str
    currency: str
    incoterm: str
    incoterm_place: str
    freight: Decimal | None
    insurance: Decimal | None
    trade_mode: str
    transport_mode: str
    transport_name: str
    bill_of_lading: str
    exit_customs: str
    export_date: dt.date | None
    declaration_date: dt.date | None
    departure_port: str
    destination_port: str
    destination_country: str
    trade_country: str
    origin_country: str
    packages: int | None
    package_kind: str
    net_weight: Decimal | None
    gross_weight: Decimal | None
    marks: str
    remarks: str
    payment_terms: str
    valid_until: dt.date | None
    lines: tuple[Line, ...]
    total_amount: Decimal
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def exponent(self) -> int:
        """The currency's decimals."""
        return CURRENCY_EXPONENTS.get(self.currency, 2)

    def money(self, value: Decimal) -> str:
        """``value`` written with the currency's decimals and thousands separators."""
        return f"{value:,.{self.exponent}f}"


def uscc_problem(code: str) -> str | None:
    """What is wrong with ``code`` as a unified social credit code (GB 32100-2015); ``None`` if nothing."""
    if len(code) != len(_USCC_WEIGHTS) + 1:
        return f"{code!r} is not a unified social credit code: it has 18 characters, not {len(code)}"
    if not _USCC_SHAPE.fullmatch(code):
        return (
            f"{code!r} is not a unified social credit code: digits and upper-case letters other than "
            "I, O, S, V and Z, with the administrative division code (6 digits) in places 3-8"
        )
    total = sum(_USCC_ALPHABET.index(char) * weight for char, weight in zip(code, _USCC_WEIGHTS, strict=False))
    check = _USCC_ALPHABET[(31 - total % 31) % 31]
    if code[-1] != check:
        return f"{code!r} is not a unified social credit code: its check character should be {check!r}"
    return None


def country_code(value: str) -> str | None:
    """The ISO 3166-1 alpha-2 code of ``value`` (an alpha-2 or alpha-3 code), or ``None``."""
    code = value.strip().upper()
    if len(code) == 2:
        found = pycountry.countries.get(alpha_2=code)
    elif len(code) == 3:
        found = pycountry.countries.get(alpha_3=code)
    else:
        return None
    return str(found.alpha_2) if found is not None else None


class _Reader:
    """Reads the record's values, collecting every problem instead of stopping at the first."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = values
        self.problems: list[Problem] = []

    def problem(self, pointer: str, message: str) -> None:
        self.problems.append(Problem(pointer, message))

    def text(
        self, source: Mapping[str, Any], key: str, pointer: str, *, required: bool = False, default: str = ""
    ) -> str:
        value = source.get(key)
        if value is None or value == "":
            if required and not default:
                self.problem(pointer, "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.problem(pointer, f"must be text, not {type(value).__name__}")
            return default
        return str(value).strip()

    def decimal(self, source: Mapping[str, Any], key: str, pointer: str, *, required: bool = False) -> Decimal | None:
        value = source.get(key)
        if value is None or value == "":
            if required:
                self.problem(pointer, "is required")
            return None
        if isinstance(value, Mapping) and "amount" in value:
            # A money value of the records API: an integer of minor units in its currency.
            currency = str(value.get("currency") or "")
            amount = value["amount"]
            if isinstance(amount, bool) or not isinstance(amount, int):
                self.problem(pointer, "a money amount is an integer of minor units (cents)")
                return None
            return Decimal(amount).scaleb(-CURRENCY_EXPONENTS.get(currency, 2))
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.problem(pointer, f"must be a number, not {type(value).__name__}")
            return None
        try:
            # str() first: a JSON float such as 0.1 must read as 0.1, not its binary neighbour.
            number = Decimal(str(value).strip().replace(",", ""))
        except InvalidOperation:
            self.problem(pointer, f"{value!r} is not a number")
            return None
        if not number.is_finite():
            self.problem(pointer, f"{value!r} is not a number")
            return None
        return number

    def integer(self, source: Mapping[str, Any], key: str, pointer: str, *, required: bool = False) -> int | None:
        number = self.decimal(source, key, pointer, required=required)
        if number is None:
            return None
        if number != number.to_integral_value():
            self.problem(pointer, f"{number} is not a whole number")
            return None
        return int(number)

    def date(self, source: Mapping[str, Any], key: str, pointer: str) -> dt.date | None:
        value = source.get(key)
        if value is None or value == "":
            return None
        try:
            return dt.date.fromisoformat(str(value)[:10])
        except ValueError:
            self.problem(pointer, f"{value!r} is not a date (YYYY-MM-DD)")
            return None

    def country(
        self, source: Mapping[str, Any], key: str, pointer: str, *, required: bool = False, default: str = ""
    ) -> str:
        value = self.text(source, key, pointer, required=required, default=default)
        if not value:
            return ""
        code = country_code(value)
        if code is None:
            self.problem(pointer, f"{value!r} is not an ISO 3166-1 country code (e.g. CN, DE, USA)")
            return ""
        return code


def read_order(values: Mapping[str, Any], config: Mapping[str, Any], kinds: Collection[str]) -> Order:
    """Read and check an order record's ``values`` for the document ``kinds``; the exporter's details
    missing from the record come from the plugin's settings ``config``.

    Raises :class:`OrderInvalid` listing every problem found.
    """
    reader = _Reader(values)
    declaration = EXPORT_DECLARATION in kinds
    shipping = declaration or PACKING_LIST in kinds
    settings = {key: value for key, value in config.items() if isinstance(value, str) and value.strip()}

    order_number = reader.text(values, "order_number", "/order_number", required=True)
    consignor = Party(
        name_zh=reader.text(
            values, "consignor_name_zh", "/consignor_name_zh", default=settings.get("exporter_name_zh", "")
        ),
        name_en=reader.text(
            values, "consignor_name_en", "/consignor_name_en", default=settings.get("exporter_name_en", "")
        ),
        address=reader.text(
            values,
            "consignor_address",
            "/consignor_address",
            required=True,
            default=settings.get("exporter_address", ""),
        ),
        country="CN",
        uscc=reader.text(
            values, "consignor_uscc", "/consignor_uscc", default=settings.get("exporter_uscc", "")
        ).upper(),
    )
    if not (consignor.name_zh or consignor.name_en):
        reader.problem("/consignor_name_zh", "the consignor (境内发货人) needs a name, in Chinese or English")
    if declaration and not consignor.name_zh:
        reader.problem("/consignor_name_zh", "the declaration needs the consignor's (境内发货人) Chinese name")
    if declaration and not consignor.uscc:
        reader.problem("/consignor_uscc", "the declaration needs the consignor's unified social credit code")
    elif consignor.uscc and (message := uscc_problem(consignor.uscc)):
        reader.problem("/consignor_uscc", message)

    consignee_country = reader.country(values, "consignee_country", "/consignee_country", required=True)
    consignee = Party(
        name_zh=reader.text(values, "consignee_name_zh", "/consignee_name_zh"),
        name_en=reader.text(values, "consignee_name", "/consignee_name"),
        address=reader.text(values, "consignee_address", "/consignee_address", required=True),
        country=consignee_country,
    )
    if not (consignee.name_en or consignee.name_zh):
        reader.problem("/consignee_name", "the consignee (境外收货人) needs a name")

    currency = reader.text(values, "currency", "/currency", required=True).upper()
    if currency and pycountry.currencies.get(alpha_3=currency) is None:
        reader.problem("/currency", f"{currency!r} is not an ISO 4217 currency code")
        currency = ""
    exponent = CURRENCY_EXPONENTS.get(currency, 2)
    quantum = Decimal(1).scaleb(-exponent)

    incoterm = reader.text(values, "incoterm", "/incoterm", default="FOB").upper()
    if incoterm not in INCOTERMS:
        reader.problem("/incoterm", f"{incoterm!r} is not an Incoterm ({', '.join(sorted(INCOTERMS))})")
    elif declaration and incoterm not in DECLARATION_TERMS:
        reader.problem("/incoterm", "成交方式 on the declaration is one of " + ", ".join(DECLARATION_TERMS))
    freight = _money(reader, values, "freight", quantum, currency)
    insurance = _money(reader, values, "insurance", quantum, currency)
    if declaration and incoterm in {"CFR", "CIF"} and freight is None:
        reader.problem("/freight", f"the declaration of a {incoterm} export needs the freight (运费)")
    if declaration and incoterm == "CIF" and insurance is None:
        reader.problem("/insurance", "the declaration of a CIF export needs the insurance (保费)")

    trade_mode = reader.text(values, "trade_mode", "/trade_mode", default=DEFAULT_TRADE_MODE)
    if not _TRADE_MODE_SHAPE.fullmatch(trade_mode):
        reader.problem("/trade_mode", f"{trade_mode!r} is not a trade mode code (4 digits, e.g. 0110 一般贸易)")
    transport_mode = reader.text(values, "transport_mode", "/transport_mode", required=declaration)
    transport_mode = _TRANSPORT_ALIASES.get(transport_mode.lower(), transport_mode)
    transport_mode = next((code for code, name in TRANSPORT_MODES.items() if name == transport_mode), transport_mode)
    if transport_mode and transport_mode not in TRANSPORT_MODES:
        choices = ", ".join(f"{code} {name}" for code, name in TRANSPORT_MODES.items())
        reader.problem("/transport_mode", f"{transport_mode!r} is not a mode of transport ({choices})")

    origin_country = reader.country(values, "origin_country", "/origin_country", default="CN")
    destination_country = reader.country(
        values, "destination_country", "/destination_country", default=consignee_country
    )
    trade_country = reader.country(values, "trade_country", "/trade_country", default=consignee_country)

    packages = reader.integer(values, "packages", "/packages", required=shipping)
    if packages is not None and packages <= 0:
        reader.problem("/packages", f"the number of packages (件数) must be more than 0, not {packages}")

    lines = _read_lines(reader, values, quantum, currency, declaration, origin_country, destination_country)
    line_total = sum((line.amount for line in lines), Decimal(0))
    total_amount = _money(reader, values, "total_amount", quantum, currency)
    if total_amount is not None and lines and total_amount != line_total:
        reader.problem(
            "/total_amount",
            f"the total {total_amount:.{exponent}f} is not the sum of the line amounts, {line_total:.{exponent}f}",
        )

    net_weight = _weight_total(reader, values, "net_weight_kg", [line.net_weight for line in lines], shipping)
    gross_weight = _weight_total(reader, values, "gross_weight_kg", [line.gross_weight for line in lines], shipping)
    if net_weight is not None and gross_weight is not None and net_weight > gross_weight:
        reader.problem(
            "/net_weight_kg", f"the net weight {net_weight} kg is more than the gross weight {gross_weight} kg"
        )

    order = Order(
        order_number=order_number,
        invoice_number=reader.text(values, "invoice_number", "/invoice_number", default=order_number),
        contract_number=reader.text(values, "contract_number", "/contract_number", default=order_number),
        order_date=reader.date(values, "order_date", "/order_date"),
        consignor=consignor,
        consignee=consignee,
        customs_broker=reader.text(
            values, "customs_broker", "/customs_broker", default=settings.get("customs_broker", "")
        ),
        currency=currency,
        incoterm=incoterm,
        incoterm_place=reader.text(values, "incoterm_place", "/incoterm_place"),
        freight=freight,
        insurance=insurance,
        trade_mode=trade_mode,
        transport_mode=transport_mode,
        transport_name=reader.text(values, "transport_name", "/transport_name"),
        bill_of_lading=reader.text(values, "bill_of_lading", "/bill_of_lading"),
        exit_customs=reader.text(values, "exit_customs", "/exit_customs"),
        export_date=reader.date(values, "export_date", "/export_date"),
        declaration_date=reader.date(values, "declaration_date", "/declaration_date"),
        departure_port=reader.text(
            values, "departure_port", "/departure_port", default=settings.get("default_departure_port", "")
        ),
        destination_port=reader.text(values, "destination_port", "/destination_port"),
        destination_country=destination_country,
        trade_country=trade_country,
        origin_country=origin_country,
        packages=packages,
        package_kind=reader.text(values, "package_kind", "/package_kind"),
        net_weight=net_weight,
        gross_weight=gross_weight,
        marks=reader.text(values, "marks", "/marks", default="N/M"),
        remarks=reader.text(values, "remarks", "/remarks"),
        payment_terms=reader.text(values, "payment_terms", "/payment_terms"),
        valid_until=reader.date(values, "valid_until", "/valid_until"),
        lines=tuple(lines),
        total_amount=line_total,
    )
    if reader.problems:
        raise OrderInvalid(reader.problems)
    return order


def _money(
    reader: _Reader, source: Mapping[str, Any], key: str, quantum: Decimal, currency: str, pointer: str = ""
) -> Decimal | None:
    """An amount of the order's currency: a money value in another currency, or finer than the
    currency's smallest unit, is a problem."""
    pointer = pointer or f"/{key}"
    value = source.get(key)
    if isinstance(value, Mapping) and currency and value.get("currency") not in (None, "", currency):
        reader.problem(
            pointer, f"is in {value.get('currency')}, but the order is in {currency}: one currency throughout"
        )
    amount = reader.decimal(source, key, pointer)
    if amount is None:
        return None
    if amount < 0:
        reader.problem(pointer, f"must not be negative ({amount})")
    if amount != amount.quantize(quantum, rounding=ROUND_HALF_UP):
        reader.problem(pointer, f"{amount} is finer than the smallest unit of {currency or 'the currency'} ({quantum})")
    return amount


def _read_lines(
    reader: _Reader,
    values: Mapping[str, Any],
    quantum: Decimal,
    currency: str,
    declaration: bool,
    origin_country: str,
    destination_country: str,
) -> list[Line]:
    raw_lines = values.get("lines")
    if not isinstance(raw_lines, list) or not raw_lines:
        reader.problem("/lines", "the order needs at least one line of goods")
        return []
    lines: list[Line] = []
    for index, raw in enumerate(raw_lines):
        at = f"/lines/{index}"
        if not isinstance(raw, Mapping):
            reader.problem(at, "a line is an object of fields")
            continue
        hs_code = reader.text(raw, "hs_code", f"{at}/hs_code", required=True).replace(".", "").replace(" ", "")
        if hs_code and (message := hs_code_problem(hs_code, china=declaration)):
            reader.problem(f"{at}/hs_code", message)
        name_zh = reader.text(raw, "name_zh", f"{at}/name_zh")
        name_en = reader.text(raw, "name_en", f"{at}/name_en")
        if not (name_zh or name_en):
            reader.problem(f"{at}/name_en", "the line needs a description of the goods, in English or Chinese")
        elif declaration and not name_zh:
            reader.problem(f"{at}/name_zh", "the declaration needs the goods' Chinese name (商品名称)")
        line_currency = reader.text(raw, "currency", f"{at}/currency").upper()
        if line_currency and currency and line_currency != currency:
            reader.problem(
                f"{at}/currency", f"is {line_currency}, but the order is in {currency}: one currency throughout"
            )
        quantity = reader.decimal(raw, "quantity", f"{at}/quantity", required=True)
        if quantity is not None and quantity <= 0:
            reader.problem(f"{at}/quantity", f"the quantity must be more than 0, not {quantity}")
        unit = reader.text(raw, "unit", f"{at}/unit", required=True)
        unit_price = _money_or_required(reader, raw, "unit_price", f"{at}/unit_price", currency)
        amount = _money(reader, raw, "amount", quantum, currency, f"{at}/amount")
        if quantity is not None and unit_price is not None:
            computed = (quantity * unit_price).quantize(quantum, rounding=ROUND_HALF_UP)
            if amount is None:
                amount = computed
            elif amount != computed:
                reader.problem(
                    f"{at}/amount",
                    f"{quantity} × {unit_price} = {computed}, not {amount}",
                )
        net_weight = _weight(reader, raw, "net_weight_kg", f"{at}/net_weight_kg")
        gross_weight = _weight(reader, raw, "gross_weight_kg", f"{at}/gross_weight_kg")
        if net_weight is not None and gross_weight is not None and net_weight > gross_weight:
            reader.problem(
                f"{at}/net_weight_kg", f"the net weight {net_weight} kg is more than the gross weight {gross_weight} kg"
            )
        packages = reader.integer(raw, "packages", f"{at}/packages")
        if packages is not None and packages <= 0:
            reader.problem(f"{at}/packages", f"the number of packages must be more than 0, not {packages}")
        lines.append(
            Line(
                number=index + 1,
                hs_code=hs_code,
                name_zh=name_zh,
                name_en=name_en,
                declared_elements=reader.text(raw, "declared_elements", f"{at}/declared_elements"),
                quantity=quantity or Decimal(0),
                unit=unit,
                unit_price=unit_price or Decimal(0),
                amount=amount or Decimal(0),
                net_weight=net_weight,
                gross_weight=gross_weight,
                packages=packages,
                origin_country=reader.country(raw, "origin_country", f"{at}/origin_country", default=origin_country),
                destination_country=reader.country(
                    raw, "destination_country", f"{at}/destination_country", default=destination_country
                ),
                source_region=reader.text(raw, "source_region", f"{at}/source_region"),
            )
        )
    return lines


def _money_or_required(
    reader: _Reader, raw: Mapping[str, Any], key: str, pointer: str, currency: str
) -> Decimal | None:
    # A unit price may be finer than a cent (0.125 USD a piece); only the line amount is rounded.
    if raw.get(key) in (None, ""):
        reader.problem(pointer, "is required")
        return None
    value = raw.get(key)
    if isinstance(value, Mapping) and currency and value.get("currency") not in (None, "", currency):
        reader.problem(
            pointer, f"is in {value.get('currency')}, but the order is in {currency}: one currency throughout"
        )
    price = reader.decimal(raw, key, pointer)
    if price is not None and price < 0:
        reader.problem(pointer, f"must not be negative ({price})")
    return price


def _weight(reader: _Reader, raw: Mapping[str, Any], key: str, pointer: str) -> Decimal | None:
    weight = reader.decimal(raw, key, pointer)
    if weight is not None and weight <= 0:
        reader.problem(pointer, f"a weight must be more than 0 kg, not {weight}")
        return None
    return weight


def _weight_total(
    reader: _Reader, values: Mapping[str, Any], key: str, line_weights: list[Decimal | None], required: bool
) -> Decimal | None:
    """The order's total weight: the record's own, or else the sum of the lines' when every line has one."""
    pointer = f"/{key}"
    given = _weight(reader, values, key, pointer)
    if given is not None:
        return given
    if line_weights and all(weight is not None for weight in line_weights):
        return sum((weight for weight in line_weights if weight is not None), Decimal(0)).quantize(_WEIGHT_QUANTUM)
    if required:
        reader.problem(pointer, "is required (or a weight on every line)")
    return None
