"""Citus-ready keys: tenant_id leads the primary key, foreign keys, unique constraints and indexes
of every tenant-owned table (a test over the metadata, so new tables are held to it too)."""

from __future__ import annotations

from sqlalchemy import ForeignKeyConstraint, Index, PrimaryKeyConstraint, UniqueConstraint

import services.tables  # noqa: F401  (every table in the metadata)
from tenants.base import Base
from tests.isolation import tenant_scoped_models

TENANT_TABLES = {m.__tablename__ for m in tenant_scoped_models()}


def test_there_are_tenant_tables() -> None:
    assert {"memberships", "entities", "invitations"} <= TENANT_TABLES


def test_tenant_id_leads_every_key_of_tenant_tables() -> None:
    problems = []
    for name in sorted(TENANT_TABLES):
        table = Base.metadata.tables[name]
        if table.c.tenant_id.nullable:
            problems.append(f"{name}.tenant_id is nullable")
        for constraint in table.constraints:
            cols = (
                [c.name for c in constraint.columns]
                if not isinstance(constraint, ForeignKeyConstraint)
                else [e.parent.name for e in constraint.elements]
            )
            if isinstance(constraint, PrimaryKeyConstraint | UniqueConstraint) and cols[:1] != ["tenant_id"]:
                problems.append(f"{name}: {type(constraint).__name__} {cols} does not lead with tenant_id")
            if isinstance(constraint, ForeignKeyConstraint):
                target = constraint.elements[0].column.table.name
                if target in TENANT_TABLES and cols[:1] != ["tenant_id"]:
                    problems.append(f"{name}: foreign key {cols} to {target} does not lead with tenant_id")
        for index in table.indexes:
            assert isinstance(index, Index)
            cols = [c.name for c in index.columns]
            if cols[:1] != ["tenant_id"]:
                problems.append(f"{name}: index {cols} does not lead with tenant_id")
    assert problems == []


# Credentials bound to a workspace but looked up by a public id or a secret's hash before any
# workspace is known (like login sessions): no tenant lock can scope that lookup, so the OAuth service
# filters by the caller's workspace itself, and tests/integration/test_oauth.py and the isolation
# seed (tests/isolation.py) show tenant B never reaches tenant A's apps or tokens.
CREDENTIAL_TABLES = {"oauth_clients", "oauth_codes", "oauth_tokens"}


def test_tables_with_a_required_tenant_id_are_tenant_scoped() -> None:
    untagged = [
        t.name
        for t in Base.metadata.sorted_tables
        if "tenant_id" in t.c
        and not t.c.tenant_id.nullable
        and t.name not in TENANT_TABLES
        and t.name not in CREDENTIAL_TABLES
    ]
    assert untagged == [], "give these tables the TenantScoped mixin (and RLS in their migration)"
