"""Platform mail (verification, password reset, invitation).

A mail is requested inside the business transaction as an outbox event (``mail.requested``);
a worker renders and delivers it. Where the platform deploys the messaging plugin and has an SMTP
server (``GUIJU_SMTP_URL``), the plugin sends it; otherwise delivery writes the mail to the log
(embedded mode), and tests read what was sent from :data:`sent_mail`.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.outbox import service as outbox

log = logging.getLogger("guiju.mail")

MAIL_REQUESTED = events.MAIL_REQUESTED.name


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str
    template: str
    link: str | None = None
    locale: str = "en"
    key: str = ""  # the request's event id: the same on a redelivery, so a transport can send once


class MailTransport(Protocol):
    async def send(self, mail: Mail) -> None: ...


TEMPLATES: dict[str, dict[str, tuple[str, str]]] = {
    "verify_email": {
        "en": (
            "Confirm your email for Guiju",
            "Hello {name},\n\nConfirm your email address: {link}\n\nThe link works once and expires in {hours} hours.",
        ),
        "zh-CN": (
            "请确认您在规矩的邮箱",
            "{name}，您好：\n\n请点击链接确认邮箱：{link}\n\n链接仅可使用一次，{hours} 小时内有效。",
        ),
    },
    "reset_password": {
        "en": (
            "Reset your Guiju password",
            "Hello {name},\n\nSet a new password: {link}\n\n"
            "The link works once and expires in {minutes} minutes. If you did not ask, ignore this mail.",
        ),
        "zh-CN": (
            "重置您的规矩密码",
            "{name}，您好：\n\n请点击链接设置新密码：{link}\n\n"
            "链接仅可使用一次，{minutes} 分钟内有效。如非本人操作，请忽略本邮件。",
        ),
    },
    "invitation": {
        "en": (
            "{inviter} invited you to {tenant} on Guiju",
            "Hello,\n\n{inviter} invited you to join {tenant} "
            "as {role}.\n\nAccept the invitation: {link}\n\nIt expires in {days} days.",
        ),
        "zh-CN": (
            "{inviter} 邀请您加入规矩上的「{tenant}」",
            "您好：\n\n{inviter} 邀请您以「{role}」身份加入「{tenant}」。"
            "\n\n接受邀请：{link}\n\n邀请 {days} 天内有效。",
        ),
    },
    # A notification, worded by the notifications service in the reader's language.
    "notification": {"en": ("{subject}", "{body}"), "zh-CN": ("{subject}", "{body}")},
}


def render(template: str, locale: str, variables: dict[str, Any]) -> tuple[str, str]:
    texts = TEMPLATES[template]
    subject, body = texts.get(locale) or texts["en"]
    return subject.format(**variables), body.format(**variables)


class LogTransport:
    """Writes each mail to the log and keeps the last ones in memory (embedded mode, tests)."""

    def __init__(self, keep: int = 1000) -> None:
        self.sent: deque[Mail] = deque(maxlen=keep)

    async def send(self, mail: Mail) -> None:
        self.sent.append(mail)
        log.info("mail delivered to the log", extra={"to": mail.to, "subject": mail.subject, "mail_body": mail.body})


log_transport = LogTransport()
sent_mail = log_transport.sent
_transport: MailTransport = log_transport


def set_transport(transport: MailTransport | None) -> None:
    """Install the transport that delivers platform mail (the messaging plugin's, when the platform
    deploys it and has an SMTP server); ``None`` goes back to the log."""
    global _transport
    _transport = transport or log_transport


def transport() -> MailTransport:
    """The transport platform mail goes through now."""
    return _transport


async def request_mail(
    session: AsyncSession, *, to: str, template: str, locale: str, variables: dict[str, Any], link: str | None
) -> None:
    """Ask for a mail to be sent once the current transaction commits."""
    await outbox.emit(
        session,
        MAIL_REQUESTED,
        {"to": to, "template": template, "locale": locale, "variables": variables, "link": link},
    )


async def deliver(messages: list[dict[str, Any]]) -> None:
    """Outbox subscriber: render and send each requested mail."""
    for message in messages:
        payload = message["payload"]
        variables = dict(payload["variables"], link=payload.get("link") or "")
        subject, body = render(payload["template"], payload["locale"], variables)
        await _transport.send(
            Mail(
                to=payload["to"],
                subject=subject,
                body=body,
                template=payload["template"],
                link=payload.get("link"),
                locale=payload["locale"],
                key=str(message.get("id") or ""),
            )
        )


outbox.subscribe(MAIL_REQUESTED, deliver)
