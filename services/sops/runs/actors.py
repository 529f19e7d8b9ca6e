"""The runs service's background work.

The SLA timers (reminders, overdue notices, expiries, ends of waits, exception escalations) are
scheduler timers: their handlers are registered when the runs service is imported, which importing
this module (as the worker and the scheduler do) guarantees.
"""

from __future__ import annotations

import services.broker  # noqa: F401  (sets the broker before actors are declared)
from services.sops.runs import service

__all__ = ["service"]
