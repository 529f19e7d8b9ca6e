"""Notifications sent on through the workspace's messaging plugin (e-mail, chat robots)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.marketplace.configuration import settings
from services.marketplace.loading import installed_plugin_names
from services.marketplace.models import PluginInstallation
from services.notifications import service as notifications
from services.outbox import service as outbox

# A notification for the workspace's messaging plugin to send on (e-mail, chat robots).
NOTIFICATION_FORWARDED = events.NOTIFICATION_FORWARDED.name
MESSAGING_PLUGIN, MESSAGING_NOTIFY_ACTION = "messaging", "deliver_notification"


async def messaging_installed(db: AsyncSession) -> bool:
    """Whether the session's workspace has the messaging plugin installed and enabled (and this
    platform deploys it). One short query, and none where the platform does not deploy it: the
    notify action asks this for every notification it sends."""
    if MESSAGING_PLUGIN not in installed_plugin_names():
        return False
    enabled = await db.scalar(select(PluginInstallation.enabled).where(PluginInstallation.plugin == MESSAGING_PLUGIN))
    return bool(enabled)


async def forward_notification(
    db: AsyncSession,
    recipients: list[dict[str, str]],
    title: str,
    body: str,
    link: str | None,
    *,
    key: str,
) -> None:
    """Ask the messaging plugin to send a notification on, once this transaction commits (it runs
    on the plugin's queue). ``recipients`` are ``{"email", "name", "locale"}``; ``key`` makes the
    plugin's sending idempotent."""
    sent: dict[str, Any] = {"recipients": recipients, "title": title or "-"}
    if body:
        sent["body"] = body
    if link:
        # Sent outside the app: a link within it (a run's page, say) is made absolute.
        sent["link"] = (
            link if link.startswith(("https://", "http://")) else settings().public_url + "/" + link.lstrip("/")
        )
    await outbox.emit(db, NOTIFICATION_FORWARDED, {"plugin": MESSAGING_PLUGIN, "key": key, "input": sent})


async def _forward(
    db: AsyncSession, recipients: list[dict[str, str]], title: str, body: str, link: str | None, key: str
) -> None:
    await forward_notification(db, recipients, title, body, link, key=key)


# The notifications service sends notices on through the messaging plugin where members want it.
notifications.use_channel("messaging", notifications.Channel(available=messaging_installed, forward=_forward))
