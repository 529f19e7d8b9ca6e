"""The platform's own mail, sent through the messaging plugin's ``send_email`` action.

The platform calls the plugin with a context of its own: the operator's SMTP configuration, and no
workspace's data, files, messages or events. Without an SMTP server or the plugin, mail goes to the
log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any
from urllib.parse import unquote, urlsplit

from guiju_sdk import ActionCall, HttpResponse, ScopeDenied, StoredFile, registry

from services.mail import service as mail_service
from services.mail.service import Mail
from services.marketplace import service
from services.settings import Settings

log = logging.getLogger("guiju.plugins")


@dataclass
class PlatformContext:
    """The :class:`guiju_sdk.PluginContext` of the platform's own calls into a plugin (its mail):
    the operator's configuration, and no workspace's data, files, messages or events."""

    plugin: str
    config: Mapping[str, Any]
    secrets: Mapping[str, str]
    idempotency_key: str | None = None

    @property
    def tenant_id(self) -> str:
        return ""

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return logging.LoggerAdapter(logging.getLogger(f"guiju.plugin.{self.plugin}"), {"plugin": self.plugin})

    def secret(self, name: str) -> str | None:
        return self.secrets.get(name)

    def _refuse(self, what: str) -> ScopeDenied:
        return ScopeDenied(f"the platform's own call into {self.plugin} reaches no workspace's {what}")

    async def read_records(
        self, collection: str, *, where: Mapping[str, Any] | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        raise self._refuse("records")

    async def read_record(self, collection: str, record_id: str) -> dict[str, Any] | None:
        raise self._refuse("records")

    async def write_record(
        self, collection: str, values: Mapping[str, Any], *, record_id: str | None = None
    ) -> dict[str, Any]:
        raise self._refuse("records")

    async def next_number(self, sequence: str, *, key: str | None = None) -> int:
        raise self._refuse("sequences")

    async def send_message(self, to: Sequence[str], title: str, body: str = "") -> None:
        raise self._refuse("members")

    async def emit_event(self, type: str, payload: Mapping[str, Any]) -> None:
        raise self._refuse("automations")

    async def http(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_seconds: float = 10.0,
    ) -> HttpResponse:
        raise self._refuse("hosts")

    async def store_file(self, name: str, content: bytes, content_type: str) -> StoredFile:
        raise self._refuse("files")

    async def read_file(self, file_id: str) -> tuple[StoredFile, bytes]:
        raise self._refuse("files")

    async def resolve_address(self, host: str, port: int) -> str:
        return host  # the operator's own mail server, from the platform's settings


SMTP_SECURITY = {"smtp": ("starttls", 587), "smtps": ("tls", 465), "smtp+plain": ("none", 25)}
PLATFORM_MAIL_ACTION = "send_email"


def smtp_settings(smtp_url: str, mail_from: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The messaging plugin's configuration and secrets for ``GUIJU_SMTP_URL`` and
    ``GUIJU_MAIL_FROM``; ``ValueError`` saying what is wrong with them."""
    parts = urlsplit(smtp_url)
    if parts.scheme not in SMTP_SECURITY or not parts.hostname:
        raise ValueError(f"GUIJU_SMTP_URL must be {', '.join(f'{s}://host' for s in SMTP_SECURITY)}[:port]")
    name, address = parseaddr(mail_from)
    if "@" not in address:
        raise ValueError("GUIJU_MAIL_FROM must be an address, such as 'Guiju <no-reply@example.com>'")
    security, default_port = SMTP_SECURITY[parts.scheme]
    config: dict[str, Any] = {
        "smtp_host": parts.hostname,
        "smtp_port": parts.port or default_port,
        "smtp_security": security,
        "smtp_from_address": address,
        "smtp_from_name": name or "Guiju",
    }
    secrets: dict[str, str] = {}
    if parts.username:
        config["smtp_username"] = unquote(parts.username)
        secrets["smtp_password"] = unquote(parts.password or "")
    return config, secrets


@dataclass
class PlatformMailTransport:
    """Platform mail sent by the messaging plugin's ``send_email`` action, as a workspace's mail is."""

    handler: Any
    time_limit_seconds: float
    config: Mapping[str, Any]
    secrets: Mapping[str, str]

    async def send(self, mail: Mail) -> None:
        context = PlatformContext(service.MESSAGING_PLUGIN, self.config, self.secrets, f"platform-mail:{mail.key}")
        call = ActionCall(
            {"to": [{"address": mail.to, "locale": mail.locale}], "subject": mail.subject, "text": mail.body},
            context.idempotency_key or "",
            "",
            f"platform-mail:{mail.key}",
            context,
        )
        # A failure is raised: the outbox delivers the request again later.
        await registry.call_plugin(self.handler, call, time_limit_seconds=self.time_limit_seconds)


def use_platform_mail(settings: Settings) -> None:
    """Send the platform's mail through the messaging plugin when this process deploys it and an
    SMTP server is set (app and worker start-up, after the plugins are activated); else to the log."""
    loaded = service.loaded_plugin(service.MESSAGING_PLUGIN)
    action = loaded[1].actions.get(PLATFORM_MAIL_ACTION) if loaded else None
    if not settings.smtp_url or action is None:
        if settings.smtp_url:
            log.warning("GUIJU_SMTP_URL is set but the messaging plugin is not deployed: mail goes to the log")
        mail_service.set_transport(None)
        return
    config, secrets = smtp_settings(settings.smtp_url, settings.mail_from)
    mail_service.set_transport(PlatformMailTransport(action.handler, action.time_limit_ms / 1000, config, secrets))
