"""The records service: collections (tenant-defined tables), their versioned schemas, and records.

This module is the service's public entry, the one other services and the routes use; the work is
done by its siblings: ``collections`` (field definitions, schemas and their versions), ``values``
(a record's values: checks, uniqueness, events), ``crud`` (records), ``query`` (filters, sorting,
pages) and ``transfer`` (CSV and XLSX export and import).

Functions take a session in the caller's transaction and never commit: a failure anywhere leaves
nothing half-written. Roles: managers and above shape collections (the schema is a business
decision); members create, read, update and delete records (filling in the business's data is
everyone's daily work, and procedures' form steps write records on their behalf); admins purge
hidden fields, the one destructive schema operation.
"""

from __future__ import annotations

from services.records.collections import (
    MAX_LISTED_PROBLEMS,
    CollectionInfo,
    all_fields,
    alter_collection,
    collection_fields,
    collection_info,
    count_records,
    create_collection,
    delete_collection,
    field_dicts,
    get_collection,
    get_collection_by_key,
    list_collections,
    list_versions,
    parse_field_defs,
    purge_fields,
    read_collection,
)
from services.records.crud import (
    create_record,
    create_record_values,
    create_records_values,
    delete_record,
    get_record_values,
    read_record,
    update_record,
    update_record_values,
)
from services.records.fields import KEY_RE, FieldType, currency_exponent
from services.records.lifecycle import (
    archive_collection,
    count_samples,
    delete_samples,
    free_key,
    key_taken,
    rename_collection_key,
    restore_collection,
)
from services.records.query import (
    BUILTIN_SORTS,
    DEFAULT_PAGE,
    FILTER_OPERATORS,
    MAX_PAGE,
    Filter,
    RecordMatch,
    Sort,
    decode_cursor,
    encode_cursor,
    filter_clause,
    find_records,
    list_records,
    parse_filters,
    parse_sort,
    search_records,
    title_and_key,
)
from services.records.schemas import CollectionIn as CollectionIn
from services.records.schemas import CollectionPatch as CollectionPatch
from services.records.transfer import (
    CSV_MEDIA_TYPE,
    IGNORED_IMPORT_COLUMNS,
    MAX_IMPORT_ROWS,
    XLSX_MEDIA_TYPE,
    export_records,
    import_records,
    read_table,
)
from services.records.values import coerce_values, validate_value, value_hash, visible_values

# The field types other services may name (procedure form fields and run data).
FIELD_TYPES: frozenset[str] = frozenset(t.value for t in FieldType)

__all__ = [
    "BUILTIN_SORTS",
    "CSV_MEDIA_TYPE",
    "DEFAULT_PAGE",
    "FIELD_TYPES",
    "FILTER_OPERATORS",
    "IGNORED_IMPORT_COLUMNS",
    "KEY_RE",
    "MAX_IMPORT_ROWS",
    "MAX_LISTED_PROBLEMS",
    "MAX_PAGE",
    "XLSX_MEDIA_TYPE",
    "CollectionIn",
    "CollectionInfo",
    "CollectionPatch",
    "Filter",
    "RecordMatch",
    "Sort",
    "all_fields",
    "alter_collection",
    "archive_collection",
    "coerce_values",
    "collection_fields",
    "collection_info",
    "count_records",
    "count_samples",
    "create_collection",
    "create_record",
    "create_record_values",
    "create_records_values",
    "currency_exponent",
    "decode_cursor",
    "delete_collection",
    "delete_record",
    "delete_samples",
    "encode_cursor",
    "export_records",
    "field_dicts",
    "filter_clause",
    "find_records",
    "free_key",
    "get_collection",
    "get_collection_by_key",
    "get_record_values",
    "import_records",
    "key_taken",
    "list_collections",
    "list_records",
    "list_versions",
    "parse_field_defs",
    "parse_filters",
    "parse_sort",
    "purge_fields",
    "read_collection",
    "read_record",
    "read_table",
    "rename_collection_key",
    "restore_collection",
    "search_records",
    "title_and_key",
    "update_record",
    "update_record_values",
    "validate_value",
    "value_hash",
    "visible_values",
]
