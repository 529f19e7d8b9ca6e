"""The built-in messaging plugin, deployed as every platform deploys it: the platform's own mail
goes through it to a real SMTP server, a workspace that installs it gets its notifications sent on
by e-mail (a workspace that did not install it sends nothing), and an automation e-mails the
customs plugin's documents to a forwarder the moment they are generated."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import dramatiq
import pytest
from aiosmtpd.controller import Controller

from services.automation.actions import PermanentActionError
from services.mail import service as mail
from services.marketplace import host
from services.marketplace import service as marketplace
from tests.conftest import World, deliver_events, unique_email
from tests.integration.test_automation_actions import _ctx, _run
from tests.integration.test_automations import run_automations
from tests.plugin_support import run_plugin_hooks


class Inbox:
    """An aiosmtpd handler keeping every message it accepts, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        parsed["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(parsed)
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if address in m["X-Envelope-To"]]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
async def listed(world: World) -> None:
    """The deployed plugins in the catalog, as the app's start lists them."""
    await marketplace.list_deployed_plugins()


def _text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


async def test_the_platforms_own_mail_goes_through_the_messaging_plugin(
    world: World, smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    assert "messaging" in marketplace.installed_plugin_names()  # deployed by default
    settings = dataclasses.replace(
        world.settings, smtp_url=f"smtp+plain://127.0.0.1:{port}", mail_from="规矩 Guiju <no-reply@guiju.test>"
    )
    host.use_platform_mail(settings)
    try:
        assert isinstance(mail.transport(), host.PlatformMailTransport)
        address = unique_email("platform-mail")
        await world.signup(email=address, locale="zh-CN")
        await deliver_events()
    finally:
        host.use_platform_mail(world.settings)
    assert mail.transport() is mail.log_transport  # no SMTP server set: back to the log
    [verification] = inbox.to(address)
    assert verification["Subject"] == "请确认您在规矩的邮箱"
    assert verification["From"].addresses[0].addr_spec == "no-reply@guiju.test"
    assert "/verify-email?token=" in _text(verification)
    assert verification["Message-ID"]  # derived from the request, so a redelivery is recognisable


async def test_notifications_go_on_by_email_where_the_workspace_installed_messaging(
    world: World, listed: None, smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    marketplace.configure(dataclasses.replace(world.settings, plugin_allow_http_hosts=("127.0.0.1",)))
    try:
        owner_email = unique_email("owner")
        api, body = await world.signup(email=owner_email)
        other_email = unique_email("other-owner")
        _api_b, b = await world.signup(email=other_email)
        config = {
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_security": "none",
            "smtp_from_address": "ops@acme.test",
            "smtp_from_name": "Acme Ops",
            "notification_channels": ["email"],
        }
        scopes = (await api.get("/api/v1/marketplace/plugins/messaging")).json()["scopes"]
        installed = await api.post("/api/v1/plugins/messaging/install", {"scopes": scopes, "config": config})
        assert installed.status_code == 201, installed.text
        notify = {"to": [{"role": "owner"}], "title": {"en": "Order A-1 is overdue"}, "body": {"en": "Ship it today."}}
        sent = await _run(body["tenant"]["id"], "notify", notify)
        not_sent = await _run(b["tenant"]["id"], "notify", notify)
        await run_plugin_hooks("messaging")
    finally:
        marketplace.configure(world.settings)
    assert sent["channels"] == ["in_app", "messaging"]
    assert not_sent["channels"] == ["in_app"]
    [message] = inbox.to(owner_email)
    assert message["Subject"] == "Order A-1 is overdue"
    assert "Ship it today." in _text(message)
    assert message["From"].addresses[0].addr_spec == "ops@acme.test"
    assert inbox.to(other_email) == []  # B never installed messaging: nothing left the platform for B
    installation = (await api.get("/api/v1/plugins/messaging")).json()
    assert installation["circuit"]["last_error"] is None


async def test_the_messaging_plugin_is_listed_with_its_scopes_and_secret_settings(world: World, listed: None) -> None:
    api, _ = await world.signup()
    listing = (await api.get("/api/v1/marketplace/plugins/messaging")).json()
    assert listing["category"] == "messaging"
    assert listing["publisher"] == "Guiju"
    assert listing["summary"]["zh-CN"] and listing["summary"]["en"]
    assert {"mail:send", "files:read", "http:oapi.dingtalk.com", "http:hooks.slack.com"} <= set(listing["scopes"])
    secrets = {k for k, v in listing["settings_schema"]["properties"].items() if v.get("writeOnly")}
    assert {"smtp_password", "robot_1_webhook_url", "robot_1_secret"} <= secrets
    names = {a["name"] for a in listing["actions"]}
    assert {"send_email", "post_wecom", "post_dingtalk", "post_feishu", "post_slack", "deliver_notification"} <= names

    # Installed with a secret: masked in every answer, and removable.
    installed = await api.post(
        "/api/v1/plugins/messaging/install",
        {
            "scopes": listing["scopes"],
            "config": {
                "smtp_host": "smtp.exmail.qq.com",
                "smtp_port": 465,
                "smtp_security": "tls",
                "smtp_username": "ops@acme.cn",
                "smtp_password": "app-password-123",
                "smtp_from_address": "ops@acme.cn",
            },
        },
    )
    assert installed.status_code == 201, installed.text
    assert "app-password-123" not in installed.text
    assert installed.json()["secrets"]["smtp_password"] == marketplace.MASK
    removed = await api.delete("/api/v1/plugins/messaging?confirm=messaging")
    assert removed.status_code in (200, 204), removed.text
    assert (await api.get("/api/v1/plugins/messaging")).status_code == 404


# ---------------------------------------------------------------- customs documents, e-mailed on

DOCUMENT_FIELDS = [
    {"key": "source_record", "label": "Order", "type": "text"},
    {"key": "kind", "label": "Kind", "type": "text"},
    {"key": "format", "label": "Format", "type": "text"},
    {"key": "document_version", "label": "Version", "type": "number"},
    {"key": "file", "label": "File", "type": "file"},
    {"key": "filename", "label": "File name", "type": "text"},
    {"key": "generated_at", "label": "Generated", "type": "datetime"},
]
SHIPMENT = {
    "order_number": "SO-2026-0042",
    "order_date": "2026-03-02",
    "consignor_name_zh": "深圳市远航贸易有限公司",
    "consignor_name_en": "Shenzhen Yuanhang Trading Co., Ltd.",
    "consignor_address": "深圳市南山区科技园南区 A 栋 1201",
    "consignor_uscc": "91350100M000100Y43",
    "consignee_name": "Rheinland Haushaltswaren GmbH",
    "consignee_address": "Hafenstraße 12, 20457 Hamburg",
    "consignee_country": "DE",
    "currency": "USD",
    "incoterm": "FOB",
    "transport_mode": "sea",
    "packages": 10,
    "lines": [
        {
            "hs_code": "8516500000",
            "name_zh": "微波炉",
            "name_en": "Microwave oven",
            "declared_elements": "1|0|加热食品|远航牌|MW-20",
            "quantity": 100,
            "unit": "台",
            "unit_price": "45.50",
            "net_weight_kg": 1200,
            "gross_weight_kg": 1350,
            "packages": 10,
        }
    ],
}


async def _install(api: Any, name: str, **body: Any) -> None:
    scopes = (await api.get(f"/api/v1/marketplace/plugins/{name}")).json()["scopes"]
    installed = await api.post(f"/api/v1/plugins/{name}/install", {"scopes": scopes, **body})
    assert installed.status_code == 201, installed.text


async def _run_everything(plugins: tuple[str, ...]) -> None:
    broker = dramatiq.get_broker()
    for _ in range(4):  # events → executions → actions on the plugins' queues → their events …
        await run_automations()
        for plugin in plugins:
            await asyncio.to_thread(broker.join, f"plugin.{plugin}", timeout=60_000)


async def test_customs_documents_are_attached_versioned_and_emailed_to_the_forwarder(
    world: World, listed: None, smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    marketplace.configure(dataclasses.replace(world.settings, plugin_allow_http_hosts=("127.0.0.1",)))
    try:
        api, body = await world.signup()
        tenant_id = body["tenant"]["id"]
        documents = await api.post(
            "/api/v1/collections", {"key": "customs_documents", "name": "Documents", "fields": DOCUMENT_FIELDS}
        )
        assert documents.status_code == 201, documents.text
        await _install(api, "customs", collections=["customs_documents"])
        await _install(
            api,
            "messaging",
            config={
                "smtp_host": "127.0.0.1",
                "smtp_port": port,
                "smtp_security": "none",
                "smtp_from_address": "docs@acme.test",
            },
        )
        to_forwarder = {
            "name": "Send the shipping documents to the forwarder",
            "trigger": {"type": "plugin", "plugin": "customs", "trigger": "documents_generated"},
            "actions": [
                {
                    "kind": "plugin",
                    "plugin": "messaging",
                    "action": "send_email",
                    "input": {
                        "to": [{"address": "booking@forwarder.test", "locale": "zh-CN"}],
                        "subject": "=('Documents ' + event.payload.order_number)",
                        "text": "Please find the documents attached.",
                        "attachments": "=event.payload.file_ids",
                    },
                }
            ],
        }
        saved = await api.post("/api/v1/automations", to_forwarder)
        assert saved.status_code == 201, saved.text

        generate = {
            "plugin": "customs",
            "action": "generate_documents",
            "input": {"record_id": "so-2026-0042", "order": SHIPMENT, "kinds": ["commercial_invoice", "packing_list"]},
        }
        first = await _run(tenant_id, "plugin", generate)
        # Regenerated by another action: version 2, version 1 kept; that action retried: still 2.
        second = await _run(tenant_id, "plugin", generate, _ctx(tenant_id, index=1))
        retried = await _run(tenant_id, "plugin", generate, _ctx(tenant_id, index=1, attempt=2))
        await _run_everything(("customs", "messaging"))

        # A bad order: every problem listed, nothing stored.
        bad = {**SHIPMENT, "currency": "", "lines": [{**SHIPMENT["lines"][0], "hs_code": "12", "gross_weight_kg": 1}]}
        with pytest.raises(PermanentActionError) as refused:
            await _run(tenant_id, "plugin", {**generate, "input": {**generate["input"], "order": bad}})
    finally:
        marketplace.configure(world.settings)
    assert "hs_code" in str(refused.value) and "gross" in str(refused.value) and "currency" in str(refused.value)
    assert (first["version"], second["version"], retried["version"]) == (1, 2, 2)
    records = (await api.get(f"/api/v1/collections/{documents.json()['id']}/records?limit=100")).json()["items"]
    versions = sorted((r["values"]["kind"], r["values"]["format"], r["values"]["document_version"]) for r in records)
    assert versions == sorted(
        (kind, fmt, version)
        for kind in ("commercial_invoice", "packing_list")
        for fmt in ("pdf", "xlsx")
        for version in (1, 2)
    )
    pdf = next(r["values"] for r in records if r["values"]["format"] == "pdf")
    content = await api.get(f"/api/v1/files/{pdf['file']}/content")
    assert content.status_code == 200 and content.content.startswith(b"%PDF")

    mails = inbox.to("booking@forwarder.test")
    assert len(mails) == 3  # one per generation's event (the retry's event too: it could not know)
    attached = sorted(part.get_filename() or "" for part in mails[-1].iter_attachments())
    assert attached == sorted(
        f"{kind}-SO-2026-0042-v2.{fmt}" for kind in ("commercial_invoice", "packing_list") for fmt in ("pdf", "xlsx")
    )
    assert mails[-1]["Subject"] == "Documents SO-2026-0042"
