"""Actors of the marketplace: the automated checks of a submitted plugin version.

They run on their own queue: a submission's tests may take minutes, and must never hold up the
events or the automations' actions.
"""

from __future__ import annotations

import dramatiq

import services.broker  # noqa: F401  (sets the broker before actors are declared)
from services.marketplace import publishing

CHECKS_QUEUE = "marketplace.checks"
CHECKS_TIME_LIMIT_MS = 15 * 60 * 1000


@dramatiq.actor(queue_name=CHECKS_QUEUE, time_limit=CHECKS_TIME_LIMIT_MS, max_retries=3)
async def check_submission(plugin: str, version: str) -> None:
    await publishing.run_submission_checks(plugin, version)
