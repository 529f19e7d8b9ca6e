"""E-mail: the MIME message (stdlib ``email``) and its delivery over SMTP (``aiosmtplib``).

The plugin never resolves the mail server's name itself: it asks the host
(:meth:`PluginContext.resolve_address`, which refuses addresses a tenant must not reach), opens
the TCP connection to that address, and hands the connected socket to aiosmtplib together with
the configured host name, which aiosmtplib then uses for TLS (SNI and certificate verification)
on both implicit TLS and STARTTLS. So the connection goes where the host allowed, and the
certificate is still checked against the name the tenant configured.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import mimetypes
import re
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, localtime, make_msgid
from html.parser import HTMLParser
from typing import Any

import aiosmtplib
from guiju_sdk import ActionFailed, PluginContext, ScopeDenied

from guiju_messaging.schemas import DEFAULT_MAX_ATTACHMENT_MB

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
DEFAULT_TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to send mail, from the plugin's settings."""

    host: str
    port: int
    security: str
    username: str | None
    password: str | None
    from_address: Address
    verify_tls: bool = True
    ca_certificate: str | None = None
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_MB * 1024 * 1024

    @property
    def helo_name(self) -> str:
        """The name the client gives in EHLO: the sender's domain (asking the system for its own fully
        qualified name may mean a slow DNS lookup, and says nothing useful to the server)."""
        return self.from_address.domain or "localhost"


def smtp_configured(config: Mapping[str, Any]) -> bool:
    """Whether the tenant set up e-mail at all."""
    return bool(config.get("smtp_host"))


def smtp_settings(context: PluginContext) -> SmtpSettings:
    """The SMTP settings of ``context``; fails permanently listing every missing or invalid one."""
    config = context.config
    problems: list[str] = []
    host = str(config.get("smtp_host") or "").strip()
    if not host:
        problems.append("the SMTP server (smtp_host) is not set")
    security = str(config.get("smtp_security") or "starttls")
    if security not in DEFAULT_PORTS:
        problems.append(f"smtp_security must be starttls, tls or none, not {security!r}")
        security = "starttls"
    port = config.get("smtp_port") or DEFAULT_PORTS[security]
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        problems.append(f"smtp_port must be a port number, not {port!r}")
        port = DEFAULT_PORTS[security]
    from_address: Address | None = None
    raw_from = str(config.get("smtp_from_address") or "").strip()
    if not raw_from:
        problems.append("the from address (smtp_from_address) is not set")
    else:
        from_address, problem = parse_address(raw_from, str(config.get("smtp_from_name") or ""))
        if problem:
            problems.append(f"smtp_from_address: {problem}")
    username = str(config.get("smtp_username") or "").strip() or None
    password = context.secret("smtp_password")
    if username and not password:
        problems.append("smtp_username is set but the SMTP password (smtp_password) is not")
    ca_certificate = str(config.get("smtp_ca_certificate") or "").strip() or None
    if ca_certificate and "-----BEGIN CERTIFICATE-----" not in ca_certificate:
        problems.append("smtp_ca_certificate must be a PEM certificate (-----BEGIN CERTIFICATE----- …)")
    timeout = config.get("smtp_timeout_seconds") or DEFAULT_TIMEOUT_SECONDS
    if not _positive_number(timeout):
        problems.append(f"smtp_timeout_seconds must be a positive number, not {timeout!r}")
        timeout = DEFAULT_TIMEOUT_SECONDS
    limit_mb = config.get("max_attachment_mb") or DEFAULT_MAX_ATTACHMENT_MB
    if not _positive_number(limit_mb):
        problems.append(f"max_attachment_mb must be a positive number, not {limit_mb!r}")
        limit_mb = DEFAULT_MAX_ATTACHMENT_MB
    if problems or from_address is None:
        raise ActionFailed("E-mail is not configured: " + "; ".join(problems))
    return SmtpSettings(
        host=host,
        port=port,
        security=security,
        username=username,
        password=password,
        from_address=from_address,
        verify_tls=config.get("smtp_verify_tls", True) is not False,
        ca_certificate=ca_certificate,
        timeout_seconds=float(timeout),
        max_attachment_bytes=int(float(limit_mb) * 1024 * 1024),
    )


def _positive_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def parse_address(address: str, name: str = "") -> tuple[Address | None, str | None]:
    """``address`` (with display ``name``) as an :class:`Address`, or ``None`` and why it is not one."""
    if any(c in address + name for c in "\r\n"):
        return None, f"{address!r} contains a line break"
    try:
        parsed = Address(display_name=name.strip(), addr_spec=address.strip())
    except (ValueError, IndexError) as exc:
        return None, f"{address!r} is not an e-mail address ({exc})"
    if not parsed.username or not parsed.domain or "." not in parsed.domain:
        return None, f"{address!r} is not an e-mail address"
    return parsed, None


# ---------------------------------------------------------------- the message


@dataclass(frozen=True)
class Attachment:
    """A file to attach."""

    filename: str
    content_type: str
    content: bytes


@dataclass
class Envelope:
    """One message to send: its headers' recipients and the envelope's (Bcc only there)."""

    to: list[Address]
    cc: list[Address] = field(default_factory=list)
    bcc: list[Address] = field(default_factory=list)

    @property
    def recipients(self) -> list[str]:
        """Every address the message goes to, once each, in order."""
        return list(dict.fromkeys(a.addr_spec for a in [*self.to, *self.cc, *self.bcc]))


class _TextFromHtml(HTMLParser):
    """Plain text from HTML, for the text part of a message written in HTML only."""

    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self.skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")
        if tag == "a":
            self.links.append(dict(attrs).get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head"):
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")
        elif tag == "a" and self.links:
            href = self.links.pop()
            if href.startswith(("http://", "https://")):
                self.parts.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(re.sub(r"\s+", " ", data))

    def text(self) -> str:
        lines = [line.strip() for line in "".join(self.parts).splitlines()]
        text = "\n".join(lines)
        while "\n\n\n" in text:
            text = text.replace("\n\n\n", "\n\n")
        return text.strip() + "\n"


def text_from_html(html: str) -> str:
    """A readable plain-text version of ``html`` (paragraphs kept, links written out)."""
    parser = _TextFromHtml()
    parser.feed(html)
    parser.close()
    return parser.text()


def message_id(idempotency_key: str | None, part: str, domain: str) -> str:
    """The Message-ID of one message of an action: derived from the action's idempotency key, so a
    retried send carries the same id (recipients' servers and people can recognise the repeat);
    random outside an action."""
    if not idempotency_key:
        return make_msgid(domain=domain)
    digest = hashlib.sha256(f"{idempotency_key}\x00{part}".encode()).hexdigest()[:40]
    return f"<guiju.{digest}@{domain}>"


def build_message(
    *,
    sender: Address,
    envelope: Envelope,
    subject: str,
    text: str | None,
    html: str | None,
    attachments: Sequence[Attachment] = (),
    reply_to: Address | None = None,
    message_id: str,
    date: datetime | None = None,
) -> EmailMessage:
    """The MIME message: multipart/alternative (plain + HTML) when there is HTML, inside
    multipart/mixed when there are attachments (their non-ASCII names encoded per RFC 2231)."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = sender
    if envelope.to:
        message["To"] = envelope.to
    if envelope.cc:
        message["Cc"] = envelope.cc
    if reply_to is not None:
        message["Reply-To"] = reply_to
    message["Subject"] = " ".join(subject.split())  # a subject is one line
    message["Message-ID"] = message_id
    message["Date"] = format_datetime(date or localtime())
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: auto-responders should not answer
    plain = text if text is not None else text_from_html(html or "")
    message.set_content(plain, subtype="plain", charset="utf-8")
    if html is not None:
        message.add_alternative(html, subtype="html", charset="utf-8")
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        message.add_attachment(attachment.content, maintype=maintype, subtype=subtype, filename=attachment.filename)
    return message


def attachment_type(filename: str, declared: str | None) -> str:
    """The content type to label an attachment with: the stored one when it is a proper type, else
    one guessed from the name, else ``application/octet-stream``."""
    if declared and "/" in declared and ";" not in declared and " " not in declared.strip():
        return declared.strip().lower()
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


async def read_attachments(context: PluginContext, file_ids: Sequence[str], limit_bytes: int) -> list[Attachment]:
    """The files ``file_ids`` as attachments; fails permanently listing every missing file, or when
    they weigh more than ``limit_bytes`` together."""
    problems: list[str] = []
    found: list[Attachment] = []
    for file_id in file_ids:
        try:
            stored, content = await context.read_file(file_id)
        except LookupError:
            problems.append(f"attachment {file_id}: the workspace has no such file")
            continue
        except ScopeDenied as exc:
            raise ActionFailed(f"Attachments cannot be read: {exc}") from exc
        found.append(Attachment(stored.name or file_id, attachment_type(stored.name, stored.content_type), content))
    total = sum(len(a.content) for a in found)
    if total > limit_bytes:
        sizes = ", ".join(f"{a.filename} {_megabytes(len(a.content))}" for a in found)
        problems.append(
            f"the attachments weigh {_megabytes(total)} together, more than the {_megabytes(limit_bytes)} "
            f"allowed ({sizes})"
        )
    if problems:
        raise ActionFailed("; ".join(problems))
    return found


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


# ---------------------------------------------------------------- SMTP


def tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    """The TLS context for the mail server: the system's trusted CAs plus the configured one, or no
    verification at all when the tenant turned it off."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not settings.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif settings.ca_certificate:
        try:
            context.load_verify_locations(cadata=settings.ca_certificate)
        except (ssl.SSLError, ValueError) as exc:
            raise ActionFailed(f"smtp_ca_certificate cannot be read: {exc}") from exc
    return context


async def _connected_socket(address: str, port: int, seconds: float) -> socket.socket:
    """A connected, non-blocking TCP socket to ``address`` (an IP, or a name the host gave)."""
    loop = asyncio.get_running_loop()
    infos: list[tuple[int, Any]]
    try:
        numeric = ipaddress.ip_address(address)
        infos = [(socket.AF_INET6 if numeric.version == 6 else socket.AF_INET, (address, port))]
    except ValueError:  # the host answered with a name: resolve it, as it said to connect there
        found = await loop.getaddrinfo(address, port, type=socket.SOCK_STREAM)
        infos = [(family, sockaddr) for family, _, _, _, sockaddr in found]
    last: OSError | None = None
    for family, sockaddr in infos:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(seconds):
                await loop.sock_connect(sock, sockaddr)
        except (OSError, TimeoutError) as exc:
            sock.close()
            last = exc if isinstance(exc, OSError) else OSError(f"timed out after {seconds:g} s")
            continue
        return sock
    raise last or OSError("no address to connect to")


class SmtpSession:
    """A connected, authenticated SMTP session: ``async with SmtpSession(context, settings) as smtp``."""

    def __init__(self, context: PluginContext, settings: SmtpSettings) -> None:
        self.context = context
        self.settings = settings
        self.client: aiosmtplib.SMTP | None = None

    async def __aenter__(self) -> aiosmtplib.SMTP:
        settings = self.settings
        where = f"{settings.host}:{settings.port}"
        try:
            address = await self.context.resolve_address(settings.host, settings.port)
        except ScopeDenied as exc:
            raise ActionFailed(f"The mail server {where} may not be used: {exc}") from exc
        context = tls_context(settings) if settings.security != "none" else None
        try:
            sock = await _connected_socket(address, settings.port, settings.timeout_seconds)
        except OSError as exc:
            raise ActionFailed(f"Cannot connect to the mail server {where}: {exc}", retryable=True) from exc
        try:
            client = aiosmtplib.SMTP(
                hostname=settings.host,  # with sock: used only as the TLS server name, for SNI and verification
                sock=sock,
                use_tls=settings.security == "tls",
                start_tls=settings.security == "starttls",
                tls_context=context,
                local_hostname=settings.helo_name,
                timeout=settings.timeout_seconds,
                username=settings.username,
                password=settings.password if settings.username else None,
            )
        except ValueError as exc:
            sock.close()
            raise ActionFailed(f"The SMTP settings are inconsistent: {exc}") from exc
        # From here the socket belongs to the client's transport, which closes it (closing it here
        # too would free its descriptor while the event loop still watches it).
        try:
            await client.connect()
        except Exception as exc:
            raise smtp_failure(exc, where) from exc
        self.client = client
        return client

    async def __aexit__(self, *exc_info: object) -> None:
        if self.client is not None and self.client.is_connected:
            try:
                await self.client.quit()
            except (aiosmtplib.SMTPException, OSError):
                self.client.close()  # the mail was already sent or refused; a failed QUIT changes nothing


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def smtp_failure(exc: BaseException, where: str) -> ActionFailed:
    """``exc`` from an SMTP exchange with ``where`` as an :class:`ActionFailed`: a 4xx reply or a
    network failure retryable; a 5xx reply, a refused certificate or a missing STARTTLS not,
    with the server's reply in the message."""
    if isinstance(exc, ActionFailed):
        return exc
    certificate = _cause(exc, ssl.SSLCertVerificationError)
    if isinstance(certificate, ssl.SSLCertVerificationError):
        return ActionFailed(
            f"The mail server {where} presented a certificate that cannot be trusted "
            f"({certificate.verify_message}): check the server name, or add its CA under "
            "'Extra trusted CA certificate'"
        )
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        reply = f"{exc.code} {exc.message}"
        if 400 <= exc.code < 500:
            return ActionFailed(f"The mail server {where} could not log in now: {reply}", retryable=True)
        return ActionFailed(
            f"The mail server {where} refused the user name or password: {reply} "
            "(many providers want an app password, 授权码, instead of the login password)"
        )
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        replies = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        temporary = all(400 <= r.code < 500 for r in exc.recipients)
        return ActionFailed(f"The mail server {where} refused every recipient: {replies}", retryable=temporary)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        reply = f"{exc.code} {exc.message}"
        if 400 <= exc.code < 500:
            return ActionFailed(f"The mail server {where} is not accepting mail now: {reply}", retryable=True)
        return ActionFailed(f"The mail server {where} refused the mail: {reply}")
    if isinstance(exc, aiosmtplib.SMTPNotSupported) or (
        isinstance(exc, aiosmtplib.SMTPException) and "STARTTLS" in str(exc)
    ):
        return ActionFailed(
            f"The mail server {where} does not support what the settings ask: {exc} "
            "(check 'Connection security' and the port)"
        )
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return ActionFailed(f"The mail server {where} did not answer in time", retryable=True)
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError | OSError):
        return ActionFailed(f"The connection to the mail server {where} failed: {exc}", retryable=True)
    if isinstance(exc, aiosmtplib.SMTPException):
        return ActionFailed(f"The mail server {where} failed: {exc}", retryable=True)
    raise exc


async def deliver(
    smtp: aiosmtplib.SMTP, message: EmailMessage, sender: str, recipients: Sequence[str], where: str
) -> tuple[list[str], dict[str, str]]:
    """Send ``message`` to ``recipients``: those accepted, and the refused ones with the server's reply."""
    try:
        refused, _ = await smtp.send_message(message, sender=sender, recipients=list(recipients))
    except Exception as exc:
        raise smtp_failure(exc, where) from exc
    replies = {address: f"{reply.code} {reply.message}" for address, reply in refused.items()}
    return [r for r in recipients if r not in replies], replies
