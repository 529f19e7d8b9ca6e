"""Querying records: filters, sorting and keyset pages over the JSON values, the same on SQLite
and PostgreSQL."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import ColumnElement, String, and_, case, cast, false, literal, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from services.json_body import decode_json_body
from services.records.collections import _collection, _stored_defs
from services.records.fields import FieldDef, FieldType, FieldValueError, coerce_value, problem_for
from services.records.models import Collection, Record
from services.records.values import visible_values
from tenants.errors import FieldProblem, NotFound, ProblemError, ValidationProblem
from tenants.models import Role
from tenants.principal import Principal

MAX_PAGE = 200
DEFAULT_PAGE = 50
FILTER_OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "contains", "in", "is_null")
BUILTIN_SORTS = ("created_at", "updated_at")


# ---------------------------------------------------------------- listing: filters, sorting, keyset pages


@dataclass(frozen=True)
class Filter:
    field: str
    operator: str
    value: str


_FILTER_PARAM = re.compile(r"filter\[([a-z][a-z0-9_]*)\](?:\[([a-z_]+)\])?")


def parse_filters(params: Mapping[str, list[str]]) -> tuple[list[Filter], list[FieldProblem]]:
    """``filter[amount][gte]=100`` (and ``filter[status]=open``, meaning eq) from query parameters."""
    filters: list[Filter] = []
    problems: list[FieldProblem] = []
    for name, raw_values in params.items():
        if not name.startswith("filter"):
            continue
        match = _FILTER_PARAM.fullmatch(name)
        if match is None:
            problems.append(
                FieldProblem(
                    pointer=f"/query/{name}", code="invalid_filter", message="write filter[<field>][<operator>]=<value>"
                )
            )
            continue
        operator = match.group(2) or "eq"
        if operator not in FILTER_OPERATORS:
            problems.append(
                FieldProblem.of(
                    pointer=f"/query/{name}",
                    code="unknown_operator",
                    message="use one of {options}",
                    options=", ".join(FILTER_OPERATORS),
                )
            )
            continue
        filters.extend(Filter(match.group(1), operator, value) for value in raw_values)
    return filters, problems


def _sql_value(fd: FieldDef) -> ColumnElement[Any]:
    expr: ColumnElement[Any]
    """The SQL expression of a field's value, typed for comparison on SQLite and Postgres alike."""
    ftype = fd.field_type
    column = Record.values
    if ftype == FieldType.NUMBER:
        expr = column[fd.key].as_float()
    elif ftype == FieldType.MONEY:
        expr = column[(fd.key, "amount")].as_float()
    elif ftype == FieldType.BOOLEAN:
        expr = column[fd.key].as_boolean()
    else:
        expr = column[fd.key].as_string()
    return expr


def _filter_operand(fd: FieldDef, text: str) -> Any:
    """A filter's value in the form :func:`_sql_value` compares with."""
    value = coerce_value(
        msgspec.structs.replace(fd, required=False, min=None, max=None, pattern=None), text, from_text=True
    )
    if fd.field_type == FieldType.MONEY:
        return float(value["amount"])
    if fd.field_type == FieldType.NUMBER:
        return float(value)
    return value


def _compare(expr: ColumnElement[Any], operator: str, operand: object) -> ColumnElement[bool]:
    if operator == "eq":
        return expr == operand
    if operator == "ne":
        return or_(expr != operand, expr.is_(None))
    if operator == "lt":
        return expr < operand
    if operator == "lte":
        return expr <= operand
    if operator == "gt":
        return expr > operand
    return expr >= operand


_ORDERED = frozenset({FieldType.NUMBER, FieldType.MONEY, FieldType.DATE, FieldType.DATETIME, FieldType.TEXT})
_NOT_FILTERABLE = frozenset({FieldType.LINE_ITEMS, FieldType.LONG_TEXT})


def _like_escape(text: str) -> str:
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def filter_clause(fd: FieldDef, flt: Filter, pointer: str) -> ColumnElement[bool]:
    """The WHERE clause of one filter; :class:`FieldValueError` when the value or operator does not fit."""
    ftype = fd.field_type
    if flt.operator == "is_null":
        wanted = coerce_value(FieldDef(key="v", label="v", type="boolean"), flt.value, from_text=True)
        path = Record.values[(fd.key, "amount")] if ftype == FieldType.MONEY else Record.values[fd.key]
        # Absent and JSON null both read as SQL NULL through ->> (Postgres) and json_extract (SQLite).
        null: ColumnElement[bool] = path.as_string().is_(None)
        return null if wanted else ~null
    if ftype == FieldType.MULTI_SELECT:
        if flt.operator != "contains":
            raise FieldValueError("unsupported_operator", "a multiple choice field filters with contains or is_null")
        option = _select_option(fd, flt.value)
        # A JSON list of options contains the option's JSON text, quotes included, exactly once.
        pattern = "%" + _like_escape(json.dumps(option)) + "%"
        return cast(Record.values[fd.key], String).like(pattern, escape="!")
    if ftype in _NOT_FILTERABLE and flt.operator != "contains":
        raise FieldValueError("unsupported_operator", f"a {ftype} field filters with contains or is_null")
    if flt.operator == "contains":
        if ftype not in {FieldType.TEXT, FieldType.LONG_TEXT, FieldType.EMAIL, FieldType.PHONE}:
            raise FieldValueError("unsupported_operator", "contains applies to text, email and phone fields")
        text: ColumnElement[str] = Record.values[fd.key].as_string()
        return text.ilike("%" + _like_escape(flt.value) + "%", escape="!")
    expr = _sql_value(fd)
    if flt.operator == "in":
        parts = [p for p in flt.value.split(",") if p.strip()]
        if not parts:
            raise FieldValueError("required", "list the values, separated by commas")
        return expr.in_([_filter_operand(fd, p) for p in parts])
    if flt.operator in {"lt", "lte", "gt", "gte"} and ftype not in _ORDERED:
        raise FieldValueError("unsupported_operator", f"a {ftype} field cannot be compared with {flt.operator}")
    operand = _filter_operand(fd, flt.value)
    clause = _compare(expr, flt.operator, operand)
    if ftype == FieldType.MONEY and flt.operator != "ne":
        currency = coerce_value(fd, flt.value, from_text=True)["currency"]
        clause = and_(clause, Record.values[(fd.key, "currency")].as_string() == currency)
    return clause


def _select_option(fd: FieldDef, text: str) -> str:
    option = text.strip()
    if option not in (fd.options or []):
        raise FieldValueError("not_an_option", f"'{option}' is not one of {fd.options}")
    return option


@dataclass(frozen=True)
class Sort:
    key: str  # a field key, created_at or updated_at
    descending: bool

    @property
    def spec(self) -> str:
        return ("-" if self.descending else "") + self.key


def _sort_expression(defs: dict[str, FieldDef], sort: Sort) -> ColumnElement[Any]:
    if sort.key in BUILTIN_SORTS:
        column: ColumnElement[Any] = getattr(Record, sort.key).expression
        return column
    return _sql_value(defs[sort.key])


def _python_sort_value(defs: dict[str, FieldDef], sort: Sort, record: Record) -> Any:
    if sort.key in BUILTIN_SORTS:
        moment: datetime = getattr(record, sort.key)
        return moment.isoformat()
    fd = defs[sort.key]
    value = record.values.get(sort.key)
    if value is None:
        return None
    if fd.field_type == FieldType.MONEY:
        return float(value["amount"])
    if fd.field_type == FieldType.NUMBER:
        return float(value)
    if fd.field_type in {FieldType.MULTI_SELECT, FieldType.LINE_ITEMS}:
        return None
    return value


def encode_cursor(sort: Sort, value: Any, record_id: uuid.UUID) -> str:
    raw = json.dumps([sort.spec, value, str(record_id)], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: Sort, defs: Mapping[str, FieldDef]) -> tuple[Any, uuid.UUID]:
    """The sort value and record id a cursor of this list continues after; a cursor that is not one
    (forged, from another sort, or holding a value of the wrong kind for the sort) is 422."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        spec, value, record_id = decode_json_body(raw)
        if spec != sort.spec:
            raise ValueError("the cursor belongs to another sort")
        return _cursor_sort_value(defs, sort, value), uuid.UUID(record_id)
    except (ValueError, TypeError, OverflowError, binascii.Error, ProblemError) as exc:
        raise ValidationProblem(
            errors=[
                FieldProblem.of(
                    pointer="/query/cursor", code="invalid_cursor", message="not a cursor of this list: {exc}", exc=exc
                )
            ]
        ) from None


def _cursor_sort_value(defs: Mapping[str, FieldDef], sort: Sort, value: Any) -> Any:
    """A cursor's sort value, of the kind :func:`_python_sort_value` writes for this sort, so that
    the database compares like with like (a forged number for a date, or a number past a double,
    would otherwise fail in the query)."""
    if value is None or not sort.key:
        return None
    if sort.key in BUILTIN_SORTS:
        if not isinstance(value, str):
            raise TypeError("the position is not a time")
        if datetime.fromisoformat(value).tzinfo is None:
            raise ValueError("the position's time has no offset")
        return value
    field_type = defs[sort.key].field_type
    if field_type in {FieldType.NUMBER, FieldType.MONEY}:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError("the position is not a number")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError("the position is not a finite number")
        return number
    if field_type == FieldType.BOOLEAN:
        if not isinstance(value, bool):
            raise TypeError("the position is not true or false")
        return value
    if not isinstance(value, str):
        raise TypeError("the position is not a text")
    return value


def _after_cursor(expr: Any, sort: Sort, value: Any, record_id: uuid.UUID) -> ColumnElement[bool]:
    """Rows after the cursor in the order (nulls last ascending, first descending; ties by id)."""
    if sort.key in BUILTIN_SORTS and value is not None:
        value = datetime.fromisoformat(value)
    elif isinstance(value, bool):
        value = literal(value)  # SQLAlchemy compares a column with a bare True/False only by equality
    if not sort.descending:
        if value is None:
            return and_(expr.is_(None), Record.id > record_id)
        return or_(expr.is_(None), expr > value, and_(expr == value, Record.id > record_id))
    if value is None:
        return or_(expr.is_not(None), and_(expr.is_(None), Record.id < record_id))
    return and_(expr.is_not(None), or_(expr < value, and_(expr == value, Record.id < record_id)))


def parse_sort(defs: dict[str, FieldDef], spec: str | None) -> Sort:
    if not spec:
        return Sort("", False)
    descending = spec.startswith("-")
    key = spec.lstrip("-+")
    fd = defs.get(key)
    if key not in BUILTIN_SORTS and (
        fd is None or fd.removed or fd.field_type in {FieldType.MULTI_SELECT, FieldType.LINE_ITEMS}
    ):
        raise ValidationProblem(
            errors=[
                FieldProblem.of(pointer="/query/sort", code="invalid_sort", message="cannot sort by '{key}'", key=key)
            ]
        )
    return Sort(key, descending)


async def find_records(
    db: AsyncSession, collection_key: str, where: Mapping[str, Any], *, limit: int = DEFAULT_PAGE
) -> list[tuple[uuid.UUID, dict[str, Any]]]:
    """Live records of the collection ``collection_key`` whose values equal ``where``'s, newest first,
    as (id, visible values); an unknown collection is 404, an unknown field or unfit value 422."""
    found = await db.scalar(select(Collection).where(Collection.key == collection_key))
    if found is None:
        raise NotFound("No collection '{collection_key}'.", code="collection_not_found", collection_key=collection_key)
    defs = _stored_defs(found)
    live = {d.key: d for d in defs if not d.removed}
    clauses: list[ColumnElement[bool]] = [Record.collection_id == found.id, Record.deleted_at.is_(None)]
    problems: list[FieldProblem] = []
    for key, value in where.items():
        pointer = f"/where/{key}"
        fd = live.get(key)
        if fd is None:
            problems.append(FieldProblem.of(pointer=pointer, code="unknown_field", message="no field '{key}'", key=key))
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        try:
            clauses.append(filter_clause(fd, Filter(key, "eq", text), pointer))
        except FieldValueError as exc:
            problems.append(FieldProblem(pointer=pointer, code=exc.code, message=str(exc)))
    if problems:
        raise ValidationProblem("The record query is not valid.", code="invalid_query", errors=problems)
    rows = await db.scalars(
        select(Record).where(*clauses).order_by(Record.created_at.desc(), Record.id.desc()).limit(max(1, limit))
    )
    return [(row.id, visible_values(defs, row.values)) for row in rows]


#: The kinds of field a search by words looks in.
_SEARCHED = frozenset({FieldType.TEXT, FieldType.EMAIL, FieldType.PHONE})
#: The kinds of field that may stand beside a record's title as its key field (an order's number…).
_KEY_KINDS = frozenset({FieldType.TEXT, FieldType.NUMBER, FieldType.SELECT, FieldType.EMAIL, FieldType.PHONE})


@dataclass(frozen=True)
class RecordMatch:
    """A record found by :func:`search_records`: its title, and its key field's label and value."""

    id: uuid.UUID
    title: str | None
    key_label: str | None
    key_value: str | None


def title_and_key(defs: list[FieldDef]) -> tuple[FieldDef | None, FieldDef | None]:
    """The field that titles a collection's records (its first text field) and the one that tells
    them apart beside it (its first unique field, else the next field that reads as a short word)."""
    live = [d for d in defs if not d.removed]
    title = next((d for d in live if d.field_type == FieldType.TEXT), None)
    others = [d for d in live if d is not title and d.field_type in _KEY_KINDS]
    key = next((d for d in others if d.unique), others[0] if others else None)
    return title, key


async def search_records(db: AsyncSession, collection_key: str, text: str, *, limit: int = 10) -> list[RecordMatch]:
    """Live records of the collection ``collection_key`` with ``text`` in one of their text, email
    or phone fields (any case), newest first, with their title and key field; the newest records
    for no text. An unknown collection is 404."""
    found = await db.scalar(select(Collection).where(Collection.key == collection_key))
    if found is None:
        raise NotFound("No collection '{collection_key}'.", code="collection_not_found", collection_key=collection_key)
    defs = _stored_defs(found)
    clauses: list[ColumnElement[bool]] = [Record.collection_id == found.id, Record.deleted_at.is_(None)]
    wanted = text.strip()
    if wanted:
        searched = [d for d in defs if not d.removed and d.field_type in _SEARCHED]
        pattern = "%" + _like_escape(wanted) + "%"
        matches = [Record.values[d.key].as_string().ilike(pattern, escape="!") for d in searched]
        clauses.append(or_(*matches) if matches else false())
    rows = await db.scalars(
        select(Record).where(*clauses).order_by(Record.created_at.desc(), Record.id.desc()).limit(max(1, limit))
    )
    title, key = title_and_key(defs)

    def shown(fd: FieldDef | None, values: Mapping[str, Any]) -> str | None:
        value = values.get(fd.key) if fd is not None else None
        return None if value is None or value == "" else str(value)

    return [
        RecordMatch(row.id, shown(title, row.values), key.label if key else None, shown(key, row.values))
        for row in rows
    ]


async def list_records(
    db: AsyncSession,
    principal: Principal,
    collection_id: uuid.UUID,
    query_params: Mapping[str, list[str]],
    *,
    sort_spec: str | None = None,
    limit: int = DEFAULT_PAGE,
    cursor: str | None = None,
) -> tuple[Collection, list[Record], str | None]:
    """A page of live records, filtered and sorted; the opaque cursor continues after the last one."""
    principal.require_role(Role.MEMBER)
    collection = await _collection(db, collection_id)
    defs = {d.key: d for d in _stored_defs(collection) if not d.removed}
    filters, problems = parse_filters(query_params)
    clauses: list[ColumnElement[bool]] = [Record.collection_id == collection.id, Record.deleted_at.is_(None)]
    for flt in filters:
        pointer = f"/query/filter[{flt.field}][{flt.operator}]"
        if flt.field == "entity_id":
            clauses.append(_entity_filter(flt, pointer, problems))
            continue
        fd = defs.get(flt.field)
        if fd is None:
            problems.append(
                FieldProblem.of(pointer=pointer, code="unknown_field", message="no field '{field}'", field=flt.field)
            )
            continue
        try:
            clauses.append(filter_clause(fd, flt, pointer))
        except FieldValueError as exc:
            problems.append(problem_for(exc, pointer))
    if not 1 <= limit <= MAX_PAGE:
        problems.append(
            FieldProblem.of(pointer="/query/limit", code="out_of_range", message="1 to {MAX_PAGE}", MAX_PAGE=MAX_PAGE)
        )
    if problems:
        raise ValidationProblem(errors=problems)
    sort = parse_sort(defs, sort_spec)
    query = select(Record).where(*clauses)
    if sort.key:
        expr = _sort_expression(defs, sort)
        nulls = case((expr.is_(None), 1), else_=0)
        if cursor:
            value, after_id = decode_cursor(cursor, sort, defs)
            query = query.where(_after_cursor(expr, sort, value, after_id))
        if sort.descending:
            query = query.order_by(nulls.desc(), expr.desc(), Record.id.desc())
        else:
            query = query.order_by(nulls, expr, Record.id)
    else:
        if cursor:
            _value, after_id = decode_cursor(cursor, sort, defs)
            query = query.where(Record.id > after_id)
        query = query.order_by(Record.id)
    rows = list(await db.scalars(query.limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor(sort, _python_sort_value(defs, sort, last) if sort.key else None, last.id)
    return collection, rows, next_cursor


def _entity_filter(flt: Filter, pointer: str, problems: list[FieldProblem]) -> ColumnElement[bool]:
    try:
        if flt.operator == "is_null":
            return (
                Record.entity_id.is_(None)
                if flt.value.lower() in {"true", "1", "yes"}
                else Record.entity_id.is_not(None)
            )
        if flt.operator == "eq":
            return Record.entity_id == uuid.UUID(flt.value)
        if flt.operator == "in":
            return Record.entity_id.in_([uuid.UUID(v) for v in flt.value.split(",") if v.strip()])
    except ValueError:
        problems.append(FieldProblem(pointer=pointer, code="invalid_id", message="not an entity id"))
        return true()
    problems.append(
        FieldProblem(pointer=pointer, code="unsupported_operator", message="entity_id filters with eq, in or is_null")
    )
    return false()
