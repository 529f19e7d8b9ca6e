"""send_email against a real SMTP server (aiosmtpd): STARTTLS and implicit TLS with a test CA,
AUTH, MIME structure, attachments, templates per locale, and how failures are classified."""

from __future__ import annotations

import re
from email.message import EmailMessage
from typing import Any

import pytest
from guiju_messaging import plugin
from guiju_messaging.actions import send_email
from guiju_sdk import ActionCall, ActionFailed, StoredFile
from guiju_sdk.testing import PluginHarness
from messaging_support import MAIL_HOST, SMTP_USER, MailContext, mail_context

harness = PluginHarness(plugin, name="messaging")


def _parts(message: EmailMessage) -> dict[str, str]:
    found = {}
    for part in message.walk():
        if part.get_content_type() in ("text/plain", "text/html") and not part.get_filename():
            found[part.get_content_type()] = part.get_content()
    return found


async def test_starttls_with_login_sends_html_plain_and_attachments(
    mail_server_factory: Any, certificates: Any
) -> None:
    server = mail_server_factory("starttls")
    context = mail_context(server, certificates)
    report = StoredFile("f-1", "报关单-2026.pdf", "application/pdf", 9)
    context.files.append((report, b"%PDF-1.7\n"))
    sheet = StoredFile("f-2", "明细.xlsx", "", 4)
    context.files.append((sheet, b"PK\x03\x04"))

    output = await harness.run_action(
        "send_email",
        {
            "to": [{"address": "li.lei@example.com", "name": "李雷"}],
            "cc": [{"address": "han.meimei@example.com"}],
            "bcc": [{"address": "audit@example.com"}],
            "subject": "出货通知 SO-1001",
            "text": "您好，货物已出库。",
            "html": "<p>您好，货物<b>已出库</b>。</p>",
            "attachments": ["f-1", "f-2"],
        },
        context,
    )

    [received] = server.handler.received
    assert server.handler.logins == [f"LOGIN:{SMTP_USER}"] or server.handler.logins == [f"PLAIN:{SMTP_USER}"]
    assert received.sender == "robot@guiju.test"
    assert sorted(received.recipients) == ["audit@example.com", "han.meimei@example.com", "li.lei@example.com"]
    message = received.message
    assert message["Subject"] == "出货通知 SO-1001"
    assert message["To"].addresses[0].display_name == "李雷"
    assert message["From"].addresses[0].display_name == "规矩 Guiju"
    assert "Bcc" not in message and b"audit@example.com" not in received.raw
    assert message.get_content_type() == "multipart/mixed"
    alternative = message.get_payload()[0]
    assert alternative.get_content_type() == "multipart/alternative"
    assert _parts(message) == {"text/plain": "您好，货物已出库。\n", "text/html": "<p>您好，货物<b>已出库</b>。</p>\n"}
    attachments = list(message.iter_attachments())
    assert [(a.get_filename(), a.get_content_type()) for a in attachments] == [
        ("报关单-2026.pdf", "application/pdf"),
        ("明细.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ]
    assert attachments[0].get_content() == b"%PDF-1.7\n"
    assert b"filename*=utf-8''" in received.raw  # RFC 2231, which every mail client reads
    assert output["accepted"] == ["li.lei@example.com", "han.meimei@example.com", "audit@example.com"]
    assert output["refused"] == []
    assert output["message_id"] == message["Message-ID"]
    assert message["Message-ID"].endswith("@guiju.test>")


async def test_implicit_tls_verifies_the_configured_name(mail_server_factory: Any, certificates: Any) -> None:
    server = mail_server_factory("tls")
    context = mail_context(server, certificates)
    output = await harness.run_action(
        "send_email",
        {"to": [{"address": "a@example.com"}], "subject": "Hi", "text": "TLS from the first byte"},
        context,
    )
    [received] = server.handler.received
    assert received.message.get_content().strip() == "TLS from the first byte"
    assert output["accepted"] == ["a@example.com"]


async def test_a_certificate_for_another_name_is_refused(mail_server_factory: Any, certificates: Any) -> None:
    server = mail_server_factory("starttls")
    context = mail_context(server, certificates, smtp_host="mail.other.test")
    context.hosts.add("mail.other.test")
    context.addresses["mail.other.test"] = "127.0.0.1"  # the right server, the wrong name: TLS must notice
    with pytest.raises(ActionFailed) as failed:
        await harness.run_action(
            "send_email", {"to": [{"address": "a@example.com"}], "subject": "s", "text": "t"}, context
        )
    assert failed.value.retryable is False
    assert "certificate" in str(failed.value) and "mail.other.test" in str(failed.value)
    assert server.handler.received == []


async def test_an_untrusted_ca_is_refused_unless_verification_is_off(
    mail_server_factory: Any, certificates: Any
) -> None:
    server = mail_server_factory("tls")
    message = {"to": [{"address": "a@example.com"}], "subject": "s", "text": "t"}
    with pytest.raises(ActionFailed, match="cannot be trusted") as failed:
        await harness.run_action("send_email", message, mail_context(server, certificates, smtp_ca_certificate=None))
    assert failed.value.retryable is False
    unverified = mail_context(server, certificates, smtp_ca_certificate=None, smtp_verify_tls=False)
    await harness.run_action("send_email", message, unverified)
    assert len(server.handler.received) == 1


async def test_a_wrong_password_fails_for_good_with_the_server_reply(
    mail_server_factory: Any, certificates: Any
) -> None:
    server = mail_server_factory("starttls")
    context = mail_context(server, certificates, password="wrong")
    with pytest.raises(ActionFailed) as failed:
        await harness.run_action(
            "send_email", {"to": [{"address": "a@example.com"}], "subject": "s", "text": "t"}, context
        )
    assert failed.value.retryable is False
    assert "refused the user name or password: 535" in str(failed.value)
    assert server.handler.received == []


async def test_starttls_asked_of_a_server_without_it_fails_clearly(mail_server_factory: Any, certificates: Any) -> None:
    server = mail_server_factory("none", auth=False)
    context = mail_context(server, certificates, smtp_security="starttls", smtp_username=None, password=None)
    with pytest.raises(ActionFailed, match="STARTTLS") as failed:
        await harness.run_action(
            "send_email", {"to": [{"address": "a@example.com"}], "subject": "s", "text": "t"}, context
        )
    assert failed.value.retryable is False


async def test_a_relay_without_tls_or_login(mail_server_factory: Any, certificates: Any) -> None:
    server = mail_server_factory("none", auth=False)
    context = mail_context(server, certificates, smtp_username=None, password=None)
    await harness.run_action(
        "send_email",
        {
            "to": [{"address": "a@example.com"}],
            "subject": "s",
            "html": "<p>Hi <a href='https://guiju.test/x'>there</a></p>",
        },
        context,
    )
    [received] = server.handler.received
    assert _parts(received.message)["text/plain"] == "Hi there (https://guiju.test/x)\n"


async def test_templates_render_once_per_locale_group(mail_server_factory: Any, certificates: Any) -> None:
    server = mail_server_factory("starttls")
    context = mail_context(server, certificates, default_locale="zh-CN")
    output = await harness.run_action(
        "send_email",
        {
            "to": [
                {"address": "wang@example.com", "locale": "zh_CN"},
                {"address": "ada@example.com", "locale": "en-GB"},
                {"address": "jean@example.com", "locale": "fr"},  # neither language: the default, zh-CN
            ],
            "cc": [{"address": "boss@example.com", "locale": "en"}],
            "template": {
                "zh-CN": {
                    "subject": "订单 {{ record.code }} 已发货",
                    "text": "{{ record.customer }}，您好",
                    "html": "<p>{{ record.customer }}</p>",
                },
                "en": {
                    "subject": "Order {{ record.code }} shipped",
                    "text": "Dear {{ record.customer }}",
                    "html": "<p>{{ record.customer }}</p>",
                },
            },
            "variables": {"record": {"code": "SO-7", "customer": "<Acme & Co>"}},
        },
        context,
    )
    by_subject = {r.message["Subject"]: r for r in server.handler.received}
    assert set(by_subject) == {"订单 SO-7 已发货", "Order SO-7 shipped"}
    chinese, english = by_subject["订单 SO-7 已发货"], by_subject["Order SO-7 shipped"]
    assert sorted(chinese.recipients) == ["jean@example.com", "wang@example.com"]
    assert sorted(english.recipients) == ["ada@example.com", "boss@example.com"]
    assert _parts(english.message) == {
        "text/plain": "Dear <Acme & Co>\n",
        "text/html": "<p>&lt;Acme &amp; Co&gt;</p>\n",
    }
    assert [m["locale"] for m in output["messages"]] == ["zh-CN", "en"]
    assert chinese.message["Message-ID"] != english.message["Message-ID"]


async def test_a_missing_variable_names_every_missing_one_and_sends_nothing(
    mail_server_factory: Any, certificates: Any
) -> None:
    server = mail_server_factory("starttls")
    with pytest.raises(ActionFailed) as failed:
        await harness.run_action(
            "send_email",
            {
                "to": [{"address": "a@example.com", "locale": "en"}],
                "template": {"en": {"subject": "{{ run.name }} for {{ customer }}", "text": "{{ record.total }}"}},
                "variables": {"record": {"code": "SO-1"}},
            },
            mail_context(server, certificates),
        )
    message = str(failed.value)
    assert failed.value.retryable is False
    assert "template en.subject: missing variable(s) customer, run" in message
    assert "template en.text: 'dict object' has no attribute 'total'" in message
    assert server.handler.received == []


async def test_the_message_id_follows_the_idempotency_key(mail_server_factory: Any, certificates: Any) -> None:
    server = mail_server_factory("starttls")
    context = mail_context(server, certificates)
    mail = {"to": [{"address": "a@example.com"}], "subject": "s", "text": "t"}

    async def send(key: str) -> dict[str, Any]:
        context.idempotency_key = key
        result: dict[str, Any] = await send_email(ActionCall(mail, key, context.tenant_id, "execution-1", context))
        return result

    first, retried, other = await send("execution-1:3"), await send("execution-1:3"), await send("execution-2:3")
    ids = [r.message["Message-ID"] for r in server.handler.received]
    assert ids[0] == ids[1] == first["message_id"] == retried["message_id"]
    assert ids[2] == other["message_id"] != ids[0]


async def test_platform_mail_needs_nothing_but_settings(mail_server_factory: Any, certificates: Any) -> None:
    """The platform calls send_email itself: no records, no files, no automation."""
    server = mail_server_factory("tls")
    context = MailContext(
        plugin="messaging",
        config={
            "smtp_host": MAIL_HOST,
            "smtp_port": server.port,
            "smtp_security": "tls",
            "smtp_username": SMTP_USER,
            "smtp_from_address": "no-reply@guiju.test",
            "smtp_ca_certificate": certificates.ca_pem,
        },
        secrets={"smtp_password": "correct horse battery staple"},
        hosts={MAIL_HOST},
        addresses={MAIL_HOST: "127.0.0.1"},
    )
    call = ActionCall(
        {"to": [{"address": "new.user@example.com"}], "subject": "请确认您在规矩的邮箱", "text": "请点击链接确认邮箱"},
        "mail:verify:42",
        "platform",
        "mail",
        context,
    )
    output = await send_email(call)
    assert output["accepted"] == ["new.user@example.com"]
    assert server.handler.received[0].message["Subject"] == "请确认您在规矩的邮箱"


async def test_refused_recipients(mail_server_factory: Any, certificates: Any) -> None:
    server = mail_server_factory("starttls")
    server.handler.refuse = {
        "gone@example.com": "550 5.1.1 User unknown",
        "full@example.com": "452 4.2.2 Mailbox full",
    }
    context = mail_context(server, certificates)
    output = await harness.run_action(
        "send_email",
        {"to": [{"address": "ok@example.com"}, {"address": "gone@example.com"}], "subject": "s", "text": "t"},
        context,
    )
    assert output["accepted"] == ["ok@example.com"]
    assert output["refused"] == [{"address": "gone@example.com", "reply": "550 5.1.1 User unknown"}]

    with pytest.raises(ActionFailed, match=re.escape("refused every recipient: gone@example.com: 550")) as permanent:
        await harness.run_action(
            "send_email", {"to": [{"address": "gone@example.com"}], "subject": "s", "text": "t"}, context
        )
    assert permanent.value.retryable is False
    with pytest.raises(ActionFailed, match=re.escape("452 4.2.2 Mailbox full")) as temporary:
        await harness.run_action(
            "send_email", {"to": [{"address": "full@example.com"}], "subject": "s", "text": "t"}, context
        )
    assert temporary.value.retryable is True


async def test_attachment_problems_are_listed_before_connecting(mail_server_factory: Any, certificates: Any) -> None:
    server = mail_server_factory("starttls")
    context = mail_context(server, certificates, max_attachment_mb=1)
    context.files.append((StoredFile("big", "scan.tiff", "image/tiff", 2 * 1024 * 1024), b"\0" * (2 * 1024 * 1024)))
    with pytest.raises(ActionFailed) as failed:
        await harness.run_action(
            "send_email",
            {"to": [{"address": "a@example.com"}], "subject": "s", "text": "t", "attachments": ["big", "nope"]},
            context,
        )
    assert "attachment nope: the workspace has no such file" in str(failed.value)
    assert "weigh 2.0 MB together, more than the 1.0 MB allowed (scan.tiff 2.0 MB)" in str(failed.value)
    assert failed.value.retryable is False
    assert server.handler.received == []


async def test_network_failures_are_retryable_and_forbidden_hosts_are_not(certificates: Any) -> None:
    from messaging_support import MailHandler, MailServer, free_port

    closed = MailServer(MailHandler(), free_port(), "starttls")  # nothing listens there
    with pytest.raises(ActionFailed, match="Cannot connect") as failed:
        await harness.run_action(
            "send_email",
            {"to": [{"address": "a@example.com"}], "subject": "s", "text": "t"},
            mail_context(closed, certificates),
        )
    assert failed.value.retryable is True

    refused = mail_context(closed, certificates)
    refused.hosts.clear()  # the host refuses the address (a private network, say)
    with pytest.raises(ActionFailed, match="may not be used") as denied:
        await harness.run_action(
            "send_email", {"to": [{"address": "a@example.com"}], "subject": "s", "text": "t"}, refused
        )
    assert denied.value.retryable is False


async def test_bad_input_lists_every_problem(certificates: Any) -> None:
    from messaging_support import MailHandler, MailServer

    context = mail_context(MailServer(MailHandler(), 2525, "starttls"), certificates)
    with pytest.raises(ActionFailed) as failed:
        await send_email(
            ActionCall(
                {"to": [{"address": "not-an-address"}], "subject": "s", "template": {"en": {"subject": "x"}}},
                "k",
                context.tenant_id,
                "e",
                context,
            )
        )
    message = str(failed.value)
    assert message == (
        "The e-mail cannot be sent: /subject: not allowed together with a template; "
        "/template/en: needs text or html; /to/0/address: 'not-an-address' is not a 'email'"
    )


async def test_missing_settings_are_listed(certificates: Any) -> None:
    context = MailContext(plugin="messaging", config={"smtp_security": "ssl", "smtp_username": "u"})
    with pytest.raises(ActionFailed) as failed:
        await harness.run_action(
            "send_email", {"to": [{"address": "a@example.com"}], "subject": "s", "text": "t"}, context
        )
    message = str(failed.value)
    for problem in ("smtp_host", "smtp_security must be", "smtp_from_address", "smtp_password"):
        assert problem in message
