"""The current tenant, carried in a context variable.

Every tenant-scoped query needs a tenant in context; the only way around that is an explicit,
greppable ``system_scope()`` block (migrations, the relay and scheduler claiming work across
tenants, platform administration).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

_current_tenant: ContextVar[uuid.UUID | None] = ContextVar("guiju_tenant_id", default=None)
_system_scope: ContextVar[bool] = ContextVar("guiju_system_scope", default=False)


class TenantContextError(RuntimeError):
    """A tenant-scoped operation ran with no tenant in context and outside ``system_scope()``."""


def current_tenant_id() -> uuid.UUID | None:
    """The tenant of the current request or job, if any."""
    return _current_tenant.get()


def require_tenant_id() -> uuid.UUID:
    """The current tenant; raises :class:`TenantContextError` if there is none."""
    tenant_id = _current_tenant.get()
    if tenant_id is None:
        raise TenantContextError("no tenant in context: open a tenant scope or an explicit system_scope()")
    return tenant_id


def in_system_scope() -> bool:
    return _system_scope.get()


def enter_tenant(tenant_id: uuid.UUID | None) -> Token[uuid.UUID | None]:
    """Set the current tenant until :func:`leave_tenant` (for hooks that cannot use a ``with`` block)."""
    return _current_tenant.set(tenant_id)


def leave_tenant(token: Token[uuid.UUID | None]) -> None:
    _current_tenant.reset(token)


@contextmanager
def tenant_scope(tenant_id: uuid.UUID) -> Iterator[uuid.UUID]:
    """Run the block as ``tenant_id``: queries see and write only that tenant's rows."""
    token = _current_tenant.set(tenant_id)
    try:
        yield tenant_id
    finally:
        _current_tenant.reset(token)


@contextmanager
def system_scope() -> Iterator[None]:
    """Run the block across tenants. Use sparingly; every use is a reviewed exception."""
    token = _system_scope.set(True)
    tenant_token = _current_tenant.set(None)
    try:
        yield
    finally:
        _current_tenant.reset(tenant_token)
        _system_scope.reset(token)
