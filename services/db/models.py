"""Imports every table so that one metadata holds the whole schema (Alembic and tests use this)."""

from services.accounts import models as accounts_models
from services.outbox import models as outbox_models
from tenants import models as tenant_models
from tenants.base import Base

metadata = Base.metadata

__all__ = ["accounts_models", "metadata", "outbox_models", "tenant_models"]
