"""Lock 2 of tenancy, as DDL: Postgres Row-Level Security on tenant-owned tables.

Migrations call :func:`enable_tenant_rls` for every table they create with a ``tenant_id``; a test
checks that every tenant-scoped table has RLS enabled and forced.
"""

from __future__ import annotations

from alembic import op

# The policy reads two transaction-local settings applied by tenants.isolation.apply_rls_settings.
# 'app.system_scope' is 'on' only inside an explicit system_scope() (relay, scheduler, admin CLI).
POLICY_PREDICATE = (
    "(current_setting('app.system_scope', true) = 'on' "
    "OR tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)"
)


def enable_tenant_rls(table: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY')
    op.execute(f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY')
    op.execute(f'CREATE POLICY tenant_isolation ON "{table}" USING {POLICY_PREDICATE} WITH CHECK {POLICY_PREDICATE}')


def grant_app_role(role: str) -> None:
    """Let the runtime role use every table and sequence, now and in later migrations."""
    if op.get_bind().dialect.name != "postgresql":
        return
    quoted = '"' + role.replace('"', '""') + '"'
    op.execute(
        "DO $$ BEGIN "
        f"IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN "
        f"CREATE ROLE {quoted} LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END $$"
    )
    op.execute(f"GRANT USAGE ON SCHEMA public TO {quoted}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}")
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {quoted}")
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {quoted}")
    # The schema version is the migration role's business alone.
    op.execute(f"REVOKE ALL ON alembic_version FROM {quoted}")
    op.execute(f"GRANT SELECT ON alembic_version TO {quoted}")
