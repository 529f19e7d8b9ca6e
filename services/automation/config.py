"""The automation settings (``GUIJU_AUTOMATION_*`` and friends), read once per process.

Callers read them through this module (``config.max_attempts()``), never by importing the
functions, so a test can change one in one place.
"""

from __future__ import annotations

import functools

from services.settings import Settings, load_settings


@functools.cache
def settings() -> Settings:
    """The process's settings, as the automation service reads them."""
    return load_settings("admin")


def max_attempts() -> int:
    """Attempts of a retryable action before the execution is dead-lettered."""
    return max(1, settings().automation_max_attempts)


def tenant_concurrency() -> int:
    """Actions one tenant may run at the same time."""
    return max(1, settings().automation_tenant_concurrency)


def retention_days() -> int:
    """Days finished executions are kept (at least 90: see ``purge_executions``)."""
    return settings().execution_retention_days


def max_chain() -> int:
    """Executions that may follow one another, each caused by an event the previous one emitted."""
    return max(1, settings().automation_max_chain)
