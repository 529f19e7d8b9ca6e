"""What each OAuth scope lets an app do, in plain words: for the consent page and the API docs.

The texts are message ids, translated where the reader's locale is known
(``translate(SCOPE_TEXTS[scope], locale)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from services.web.i18n import N_, translate

SCOPE_TEXTS: Final[Mapping[str, str]] = {
    "records:read": N_("See your collections and records"),
    "records:write": N_("Add, change and delete records and collections"),
    "files:read": N_("See and download files"),
    "files:write": N_("Upload files"),
    "procedures:read": N_("See procedures, their versions and the business calendar"),
    "procedures:write": N_("Create, change and publish procedures, and change the business calendar"),
    "runs:read": N_("See runs, their comments and your tasks"),
    "runs:write": N_("Start runs, work on their steps, comment and report problems"),
    "automations:read": N_("See automations and what they did"),
    "automations:write": N_("Create, change, switch on and off and retry automations"),
    "templates:read": N_("See the template gallery and the installed templates"),
    "templates:write": N_("Install, upgrade and remove templates"),
    "plugins:read": N_("See the plugin marketplace and the installed plugins"),
    "plugins:write": N_("Install, set up, upgrade and remove plugins"),
    "members:read": N_("See the workspace, its members and invitations"),
    "members:write": N_("Invite and remove members, change their roles and the workspace's settings"),
    "notifications:read": N_("See your notifications and how you get them"),
    "notifications:write": N_("Mark your notifications read and choose how you get them"),
    "audit:read": N_("See the audit trail of the workspace"),
    "analytics:read": N_("See reports and figures about your work"),
    "webhooks:manage": N_("Send the workspace's events to other apps (webhooks)"),
}


def scope_phrase(scope: str, locale: str) -> str:
    """What ``scope`` lets an app do, in ``locale``."""
    return translate(SCOPE_TEXTS[scope], locale) if scope in SCOPE_TEXTS else scope
