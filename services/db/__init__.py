"""The database: engines, tenant-bound sessions and the migration runner."""

from services.db.engine import Database, begin_writing, database, dispose_databases, open_session, set_database_url
from tenants.base import Base

__all__ = ["Base", "Database", "begin_writing", "database", "dispose_databases", "open_session", "set_database_url"]
