"""Moving records in and out: export to CSV or XLSX, import from them.

An import checks every row first and creates nothing when any row is bad, unless told to skip the
bad rows; an export guards text cells so a spreadsheet never runs them as formulas.
"""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any
from zipfile import BadZipFile

import openpyxl
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.records.collections import MAX_LISTED_PROBLEMS, _collection, _stored_defs, _visible
from services.records.crud import _create
from services.records.fields import FieldDef, FieldType, value_to_text
from services.records.models import Collection, Record, RecordUniqueValue
from services.records.schemas import RowProblem
from services.records.values import _entity_problem, _reference_problems, coerce_values, value_hash
from tenants.base import utcnow
from tenants.errors import FieldProblem, ValidationProblem
from tenants.models import Role
from tenants.principal import Principal

MAX_IMPORT_ROWS = 10_000
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# Columns an export writes besides the fields; an import ignores them (it always makes new records),
# except entity_id, which places the record.
IGNORED_IMPORT_COLUMNS = frozenset({"id", "created_at", "updated_at"})
_FORMULA_START = ("=", "+", "-", "@")
_TEXTUAL = frozenset({FieldType.TEXT, FieldType.LONG_TEXT, FieldType.SELECT, FieldType.MULTI_SELECT, FieldType.EMAIL})


# ---------------------------------------------------------------- export


def _export_columns(collection: Collection) -> tuple[list[str], list[FieldDef]]:
    defs = _visible(_stored_defs(collection))
    extra = ["id", *(["entity_id"] if collection.entity_scoped else [])]
    return [*extra, *(d.key for d in defs)], defs


def _guard_formula(fd: FieldDef, text: str) -> str:
    # A spreadsheet runs a cell starting with = + - @ as a formula; a quote makes it text again
    # (the import removes it).
    return "'" + text if fd.field_type in _TEXTUAL and text.startswith(_FORMULA_START) else text


async def export_records(
    db: AsyncSession, principal: Principal, collection_id: uuid.UUID, file_format: str
) -> tuple[bytes, str, str]:
    """(content, media type, file name) of every live record, as CSV or XLSX."""
    principal.require_role(Role.MEMBER)
    collection = await _collection(db, collection_id)
    if file_format not in {"csv", "xlsx"}:
        raise ValidationProblem(
            errors=[FieldProblem(pointer="/query/format", code="not_allowed", message="csv or xlsx")]
        )
    header, defs = _export_columns(collection)
    records = list(
        await db.scalars(
            select(Record).where(Record.collection_id == collection.id, Record.deleted_at.is_(None)).order_by(Record.id)
        )
    )
    stamp = utcnow().strftime("%Y%m%d")
    name = f"{collection.key}-{stamp}.{file_format}"
    if file_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        for record in records:
            row = [str(record.id), *([str(record.entity_id or "")] if collection.entity_scoped else [])]
            row += [_guard_formula(fd, value_to_text(fd, record.values.get(fd.key))) for fd in defs]
            writer.writerow(row)
        # A byte-order mark makes Excel read the file as UTF-8 (Chinese text stays readable).
        return ("\ufeff" + buffer.getvalue()).encode("utf-8"), CSV_MEDIA_TYPE, name
    return _xlsx(collection, header, defs, records), XLSX_MEDIA_TYPE, name


def _xlsx(collection: Collection, header: list[str], defs: list[FieldDef], records: list[Record]) -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = collection.key[:31]
    sheet.append(header)
    for row_index, record in enumerate(records, start=2):
        cells: list[Any] = [str(record.id), *([str(record.entity_id or "")] if collection.entity_scoped else [])]
        for fd in defs:
            value = record.values.get(fd.key)
            if fd.field_type in {FieldType.NUMBER, FieldType.BOOLEAN} and value is not None:
                cells.append(value)
            else:
                cells.append(value_to_text(fd, value) if value is not None else None)
        for column_index, value in enumerate(cells, start=1):
            cell = sheet.cell(row=row_index, column=column_index, value=value)
            if isinstance(value, str):
                cell.data_type = "s"  # never a formula, whatever the text starts with
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


# ---------------------------------------------------------------- import


def read_table(content: bytes, filename: str) -> list[list[Any]]:
    """The rows (header first) of an uploaded CSV or XLSX file."""
    if filename.lower().endswith(".xlsx") or content[:2] == b"PK":
        return _read_xlsx(content)
    text = _decode_csv(content)
    return [row for row in csv.reader(io.StringIO(text))]


def _decode_csv(content: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return content.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ValidationProblem(
        errors=[FieldProblem(pointer="/file", code="unreadable_file", message="save the CSV as UTF-8")]
    )


def _read_xlsx(content: bytes) -> list[list[Any]]:

    try:
        workbook = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except (BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ValidationProblem(
            errors=[
                FieldProblem.of(pointer="/file", code="unreadable_file", message="not an XLSX workbook: {exc}", exc=exc)
            ]
        ) from None
    sheet = workbook.worksheets[0]
    rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    workbook.close()
    return rows


def _cell(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("'") and text[1:2] in _FORMULA_START:
            return text[1:]
        return text
    return value


async def import_records(
    db: AsyncSession,
    principal: Principal,
    collection_id: uuid.UUID,
    content: bytes,
    filename: str,
    *,
    skip_invalid: bool,
) -> tuple[int, list[RowProblem]]:
    """Create one record per data row. Every row is checked first; with any bad row nothing is
    imported (422 listing each problem as ``/rows/<row number>/<field>``), unless ``skip_invalid``:
    then the good rows are imported and the bad ones reported."""
    principal.require_role(Role.MEMBER)
    collection = await _collection(db, collection_id)
    rows = read_table(content, filename)
    rows = [r for r in rows if any(c not in (None, "") for c in r)]
    if not rows:
        raise ValidationProblem(
            errors=[FieldProblem(pointer="/file", code="empty_file", message="the file has no header row")]
        )
    if len(rows) - 1 > MAX_IMPORT_ROWS:
        raise ValidationProblem(
            errors=[
                FieldProblem.of(
                    pointer="/file",
                    code="too_many_rows",
                    message="at most {MAX_IMPORT_ROWS} rows per import",
                    MAX_IMPORT_ROWS=MAX_IMPORT_ROWS,
                )
            ]
        )
    defs = _stored_defs(collection)
    columns = _map_header(collection, defs, rows[0])
    parsed: list[tuple[int, dict[str, Any], uuid.UUID | None]] = []
    problems: dict[int, list[RowProblem]] = {}
    for number, row in enumerate(rows[1:], start=2):
        raw: dict[str, Any] = {}
        entity_text: Any = None
        for index, key in columns.items():
            cell = _cell(row[index]) if index < len(row) else None
            if key == "entity_id":
                entity_text = cell
            elif key is not None:
                raw[key] = cell
        values, found = coerce_values(defs, raw, partial=False, from_text=True, prefix="")
        row_problems = [_row_problem(number, p) for p in found]
        entity_id = None
        if entity_text not in (None, ""):
            try:
                entity_id = uuid.UUID(str(entity_text))
            except ValueError:
                row_problems.append(
                    RowProblem(row=number, field="entity_id", code="invalid_id", message="not an entity id")
                )
        if collection.entity_scoped or entity_id is not None:
            entity_problem = await _entity_problem(db, collection, entity_id, required=True, pointer="/entity_id")
            if entity_problem:
                row_problems.append(_row_problem(number, entity_problem))
        if row_problems:
            problems[number] = row_problems
        parsed.append((number, values, entity_id))
    for p in await _reference_problems(db, defs, [(f"/{n}", v) for n, v, _ in parsed if n not in problems]):
        number = int(p.pointer.split("/")[1])
        problems.setdefault(number, []).append(
            RowProblem(row=number, field=p.pointer.split("/")[2], code=p.code, message=p.message)
        )
    await _import_unique_problems(db, collection, defs, parsed, problems)
    listed = [p for number in sorted(problems) for p in problems[number]]
    if listed and not skip_invalid:
        raise ValidationProblem(
            "{bad} of {total} rows have problems; nothing was imported.",
            errors=[
                FieldProblem(
                    pointer=f"/rows/{p.row}" + (f"/{p.field}" if p.field else ""), code=p.code, message=p.message
                )
                for p in listed[:MAX_LISTED_PROBLEMS]
            ],
            bad=len(problems),
            total=len(parsed),
        )
    imported = 0
    for number, values, entity_id in parsed:
        if number in problems:
            continue
        await _create(db, collection, values, entity_id, principal.user_id)
        imported += 1
    return imported, listed


def _row_problem(number: int, problem: FieldProblem) -> RowProblem:
    field = problem.pointer.lstrip("/").split("/")[0] or None
    return RowProblem(row=number, field=field, code=problem.code, message=problem.message)


def _map_header(collection: Collection, defs: list[FieldDef], header: list[Any]) -> dict[int, str | None]:
    """Column index → field key (matched by key, else by label, ignoring case); None for ignored columns."""
    by_name: dict[str, str] = {}
    for fd in defs:
        if not fd.removed:
            by_name.setdefault(fd.label.strip().casefold(), fd.key)
    for fd in defs:
        if not fd.removed:
            by_name[fd.key.casefold()] = fd.key
    columns: dict[int, str | None] = {}
    problems: list[FieldProblem] = []
    seen: dict[str, int] = {}
    for index, cell in enumerate(header):
        name = str(cell).strip() if cell is not None else ""
        if not name:
            continue
        folded = name.casefold()
        key: str | None
        if folded in IGNORED_IMPORT_COLUMNS:
            key = None
        elif folded == "entity_id":
            key = "entity_id"
        elif folded in by_name:
            key = by_name[folded]
        else:
            problems.append(
                FieldProblem.of(
                    pointer=f"/rows/1/{name}",
                    code="unknown_column",
                    message="no field has the key or label '{name}'",
                    name=name,
                )
            )
            continue
        if key is not None:
            if key in seen:
                problems.append(
                    FieldProblem.of(
                        pointer=f"/rows/1/{name}",
                        code="duplicate_column",
                        message="'{key}' is also column {column}",
                        key=key,
                        column=seen[key] + 1,
                    )
                )
            seen[key] = index
        columns[index] = key
    if problems:
        raise ValidationProblem("The header row does not match the collection's fields.", errors=problems)
    return columns


async def _import_unique_problems(
    db: AsyncSession,
    collection: Collection,
    defs: list[FieldDef],
    parsed: list[tuple[int, dict[str, Any], uuid.UUID | None]],
    problems: dict[int, list[RowProblem]],
) -> None:
    unique_defs = [fd for fd in defs if fd.unique and not fd.removed]
    for fd in unique_defs:
        hashes = {n: value_hash(v[fd.key]) for n, v, _ in parsed if n not in problems and v.get(fd.key) is not None}
        if not hashes:
            continue
        taken = set(
            await db.scalars(
                select(RecordUniqueValue.value_hash).where(
                    RecordUniqueValue.collection_id == collection.id,
                    RecordUniqueValue.field_key == fd.key,
                    RecordUniqueValue.value_hash.in_(set(hashes.values())),
                )
            )
        )
        first_row: dict[str, int] = {}
        for number, digest in hashes.items():
            message = None
            if digest in taken:
                message = "an existing record already has this value"
            elif digest in first_row:
                message = f"row {first_row[digest]} has the same value"
            else:
                first_row[digest] = number
            if message:
                problems.setdefault(number, []).append(
                    RowProblem(row=number, field=fd.key, code="duplicate_value", message=message)
                )
