"""Real parts for the messaging plugin's tests: an SMTP server (aiosmtpd) with a certificate of a test CA,
and local HTTP servers speaking WeCom's, DingTalk's, Feishu's and Slack's webhook protocols."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from guiju_sdk import ScopeDenied
from guiju_sdk.testing import FakeContext, send_for_real

MAIL_HOST = "smtp.guiju.test"
SMTP_USER = "robot@guiju.test"
SMTP_PASSWORD = "correct horse battery staple"


# ---------------------------------------------------------------- certificates


@dataclass(frozen=True)
class TestCertificates:
    ca_pem: str
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    """A test CA, and a server certificate it issued for MAIL_HOST only."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Guiju Test CA"))
        .issuer_name(_name("Guiju Test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(MAIL_HOST))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(MAIL_HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return TestCertificates(ca_cert.public_bytes(serialization.Encoding.PEM).decode(), cert_file, key_file)


# ---------------------------------------------------------------- SMTP


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage
    raw: bytes


@dataclass
class MailHandler:
    """Keeps what it receives; refuses recipients in ``refuse`` with their reply."""

    received: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    logins: list[str] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        raw = content.encode() if isinstance(content, str) else bytes(content)
        message = message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), message, raw))
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """The server's credential check: only SMTP_USER with SMTP_PASSWORD logs in."""
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = auth_data.login.decode(), auth_data.password.decode()
        if user == SMTP_USER and password == SMTP_PASSWORD:
            self.logins.append(f"{mechanism}:{user}")
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


@dataclass
class MailServer:
    handler: MailHandler
    port: int
    security: str


@pytest.fixture
def mail_server_factory(certificates: TestCertificates) -> Iterator[Any]:
    """Start an SMTP server: ``security`` starttls (STARTTLS required before anything), tls
    (implicit) or none; ``auth`` makes it demand a login."""
    controllers: list[Controller] = []

    def start(security: str = "starttls", *, auth: bool = True) -> MailServer:
        handler = MailHandler()
        port = free_port()
        kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": port, "ready_timeout": 5.0}
        if auth:
            kwargs.update(
                authenticator=handler.authenticate, auth_required=True, auth_require_tls=security == "starttls"
            )
        if security == "starttls":
            kwargs.update(tls_context=certificates.server_context(), require_starttls=True)
        elif security == "tls":
            kwargs.update(ssl_context=certificates.server_context(), server_hostname=MAIL_HOST)
        controller = Controller(handler, **kwargs)
        controller.start()
        controllers.append(controller)
        return MailServer(handler, port, security)

    yield start
    for controller in controllers:
        controller.stop()


@dataclass
class MailContext(FakeContext):
    """A FakeContext whose ``resolve_address`` answers as the host does: the vetted IP address of
    a declared host (here, every test mail host lives on 127.0.0.1)."""

    addresses: dict[str, str] = field(default_factory=dict)

    async def resolve_address(self, host: str, port: int) -> str:
        if host not in self.hosts:
            raise ScopeDenied(f"{self.plugin} may only connect to public addresses: {host} is not")
        return self.addresses.get(host, host)


def mail_config(server: MailServer, certificates: TestCertificates, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "smtp_host": MAIL_HOST,
        "smtp_port": server.port,
        "smtp_security": server.security,
        "smtp_username": SMTP_USER,
        "smtp_from_address": "robot@guiju.test",
        "smtp_from_name": "规矩 Guiju",
        "smtp_ca_certificate": certificates.ca_pem,
        "smtp_timeout_seconds": 5,
    }
    config.update(overrides)
    return {k: v for k, v in config.items() if v is not None}


def mail_context(server: MailServer, certificates: TestCertificates, **config: Any) -> MailContext:
    secrets = {"smtp_password": config.pop("password", SMTP_PASSWORD)}
    return MailContext(
        plugin="messaging",
        config=mail_config(server, certificates, **config),
        secrets={k: v for k, v in secrets.items() if v is not None},
        hosts={MAIL_HOST},
        addresses={MAIL_HOST: "127.0.0.1"},
    )


# ---------------------------------------------------------------- vendor webhooks

WECOM_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
DINGTALK_TOKEN = "e5d6b7a8c9f0e1d2c3b4a5968778695a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e"
DINGTALK_SECRET = "SEC1b2c3d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddeeff00"
FEISHU_TOKEN = "5e3d587e-d78e-4a07-bd07-265f269f86fd"
FEISHU_SECRET = "nIMtb7r3N9pkXyXdtAbx6e"
SLACK_PATH = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
ONE_HOUR_MS = 3600 * 1000


@dataclass
class Vendors:
    """State of the emulated vendors: what each received, and a forced answer per vendor."""

    port: int = 0
    received: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"wecom": [], "dingtalk": [], "feishu": [], "slack": []}
    )
    #: vendor → (status, headers, body) answered instead of the emulation's own answer.
    forced: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)

    def url(self, vendor: str, *, token: str | None = None) -> str:
        base = f"http://127.0.0.1:{self.port}"
        if vendor == "wecom":
            return f"{base}/cgi-bin/webhook/send?key={token or WECOM_KEY}"
        if vendor == "dingtalk":
            return f"{base}/robot/send?access_token={token or DINGTALK_TOKEN}"
        if vendor == "feishu":
            return f"{base}/open-apis/bot/v2/hook/{token or FEISHU_TOKEN}"
        return f"{base}{token or SLACK_PATH}"

    def force(self, vendor: str, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = (
            body
            if isinstance(body, bytes)
            else json.dumps(body).encode()
            if not isinstance(body, str)
            else body.encode()
        )
        self.forced[vendor] = (status, headers or {}, raw)


def _json_answer(answer: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()


def wecom_answer(query: dict[str, str], payload: Any) -> tuple[int, dict[str, str], bytes]:
    """WeCom group robot: the key in the URL; errcode/errmsg with HTTP 200."""
    if query.get("key") != WECOM_KEY:
        return _json_answer({"errcode": 93000, "errmsg": "invalid webhook url, hint: [1700000000_1_abcd]"})
    if not isinstance(payload, dict) or payload.get("msgtype") not in ("text", "markdown", "template_card"):
        return _json_answer({"errcode": 40008, "errmsg": "invalid message type"})
    kind = payload["msgtype"]
    body = payload.get(kind) or {}
    if kind in ("text", "markdown"):
        content = body.get("content")
        limit = 2048 if kind == "text" else 4096
        if not content:
            return _json_answer({"errcode": 44004, "errmsg": "empty content"})
        if len(content.encode()) > limit:
            return _json_answer({"errcode": 40058, "errmsg": f"{kind}.content exceed max length {limit}"})
    elif body.get("card_type") != "text_notice" or not body.get("card_action", {}).get("url"):
        return _json_answer({"errcode": 40058, "errmsg": "invalid template_card"})
    return _json_answer({"errcode": 0, "errmsg": "ok"})


def dingtalk_answer(query: dict[str, str], payload: Any) -> tuple[int, dict[str, str], bytes]:
    """DingTalk custom robot: access_token, and with 加签 the timestamp (ms, within an hour) and the
    sign recomputed from it and the secret."""
    if query.get("access_token") != DINGTALK_TOKEN:
        return _json_answer({"errcode": 300001, "errmsg": "token is not exist"})
    timestamp, sign = query.get("timestamp"), query.get("sign")
    if not timestamp or not sign or not timestamp.isdigit():
        return _json_answer({"errcode": 310000, "errmsg": "sign not match, more: [https://ding-doc.dingtalk.com]"})
    if abs(time.time() * 1000 - int(timestamp)) > ONE_HOUR_MS:
        return _json_answer({"errcode": 310000, "errmsg": "invalid timestamp"})
    expected = base64.b64encode(
        hmac.new(DINGTALK_SECRET.encode(), f"{timestamp}\n{DINGTALK_SECRET}".encode(), hashlib.sha256).digest()
    ).decode()
    if not hmac.compare_digest(expected, sign):
        return _json_answer({"errcode": 310000, "errmsg": "sign not match, more: [https://ding-doc.dingtalk.com]"})
    kind = payload.get("msgtype") if isinstance(payload, dict) else None
    if kind not in ("text", "markdown", "actionCard", "link", "feedCard"):
        return _json_answer({"errcode": 400105, "errmsg": "不支持的消息类型"})
    return _json_answer({"errcode": 0, "errmsg": "ok"})


def feishu_answer(path: str, payload: Any) -> tuple[int, dict[str, str], bytes]:
    """Feishu custom bot: the token in the path; with 签名校验 the body's timestamp (s, within an
    hour) and sign recomputed with the key "<timestamp>\\n<secret>" over nothing."""
    if path.rsplit("/", 1)[-1] != FEISHU_TOKEN:
        return _json_answer({"code": 19001, "data": {}, "msg": "param invalid: incoming webhook access token invalid"})
    if not isinstance(payload, dict):
        return _json_answer({"code": 9499, "data": {}, "msg": "Bad Request"})
    timestamp, sign = str(payload.get("timestamp", "")), payload.get("sign")
    valid = timestamp.isdigit() and abs(time.time() - int(timestamp)) <= 3600
    expected = (
        base64.b64encode(hmac.new(f"{timestamp}\n{FEISHU_SECRET}".encode(), b"", hashlib.sha256).digest()).decode()
        if valid
        else None
    )
    if not valid or not isinstance(sign, str) or expected != sign:
        return _json_answer(
            {"code": 19021, "data": {}, "msg": "sign match fail or timestamp is not within one hour from current time"}
        )
    if payload.get("msg_type") not in ("text", "post", "interactive", "image", "share_chat"):
        return _json_answer({"code": 19002, "data": {}, "msg": "params error, msg_type need"})
    return _json_answer({"code": 0, "data": {}, "msg": "success"})


def slack_answer(path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    """Slack incoming webhook: the path is the credential; plain-text answers."""
    if path != SLACK_PATH:
        return 404, {"Content-Type": "text/html"}, b"no_service"
    try:
        payload = json.loads(body)
    except ValueError:
        return 400, {"Content-Type": "text/html"}, b"invalid_payload"
    if not isinstance(payload, dict) or not (payload.get("text") or payload.get("blocks")):
        return 400, {"Content-Type": "text/html"}, b"missing_text_or_fallback_or_attachments"
    return 200, {"Content-Type": "text/html"}, b"ok"


@pytest.fixture(scope="session")
def vendor_server() -> Iterator[Vendors]:
    vendors = Vendors()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            vendor = (
                "wecom"
                if parts.path.startswith("/cgi-bin/")
                else "dingtalk"
                if parts.path.startswith("/robot/")
                else "feishu"
                if parts.path.startswith("/open-apis/")
                else "slack"
            )
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            vendors.received[vendor].append({"path": parts.path, "query": query, "json": payload})
            if vendor in vendors.forced:
                status, headers, answer = vendors.forced[vendor]
            elif vendor == "wecom":
                status, headers, answer = wecom_answer(query, payload)
            elif vendor == "dingtalk":
                status, headers, answer = dingtalk_answer(query, payload)
            elif vendor == "feishu":
                status, headers, answer = feishu_answer(parts.path, payload)
            else:
                status, headers, answer = slack_answer(parts.path, body)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    vendors.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield vendors
    server.shutdown()
    server.server_close()


@pytest.fixture
def vendors(vendor_server: Vendors) -> Vendors:
    for received in vendor_server.received.values():
        received.clear()
    vendor_server.forced.clear()
    return vendor_server


forward = send_for_real  # FakeContext's http_handler: the plugin's requests, sent for real to the local server


def robot_context(robots: list[dict[str, Any]], secrets: dict[str, str], **config: Any) -> FakeContext:
    """A context whose robots' webhooks are the local vendor emulators."""
    return FakeContext(
        plugin="messaging",
        config={"robots": robots, **config},
        secrets=secrets,
        hosts={"127.0.0.1"},
        http_handler=forward,
    )
