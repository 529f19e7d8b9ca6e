"""Running Alembic from code: upgrade, and the list of migrations not yet applied."""

from __future__ import annotations

import re
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def alembic_config(url: str, app_role: str = "guiju_app") -> Config:
    if not _ROLE_NAME.match(app_role):
        raise ValueError(f"GUIJU_DB_APP_ROLE must be a plain lower-case identifier, got {app_role!r}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["app_role"] = app_role
    return config


def upgrade(url: str, app_role: str = "guiju_app", revision: str = "head") -> None:
    command.upgrade(alembic_config(url, app_role), revision)


async def pending_migrations(url: str) -> list[str]:
    """Revisions between the database's current one and head (empty when up to date)."""
    script = ScriptDirectory.from_config(alembic_config(url))
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            current = set(await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_heads()))
    finally:
        await engine.dispose()
    pending: list[str] = []
    for head in script.get_heads():
        for rev in script.iterate_revisions(head, "base"):
            if rev.revision in current:
                break
            pending.append(rev.revision)
    return pending
