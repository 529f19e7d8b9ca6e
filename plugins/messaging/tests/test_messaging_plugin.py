"""The plugin as the host sees it: its manifest, schemas and settings, the health check, and
deliver_notification across channels."""

from __future__ import annotations

from typing import Any

import pytest
from guiju_messaging import plugin
from guiju_messaging.schemas import ROBOT_SLOTS, input_problems
from guiju_sdk import ActionFailed, manifest_from_plugin, manifest_problems, registry
from guiju_sdk.testing import PluginHarness
from messaging_support import (
    MAIL_HOST,
    WECOM_KEY,
    MailContext,
    Vendors,
    forward,
    mail_config,
    mail_context,
)

harness = PluginHarness(plugin, name="messaging")


def test_the_plugin_registers_as_the_host_would_accept_it() -> None:
    info = harness.info()
    assert (info.name, info.version, info.publisher, info.category) == ("messaging", "1.0.0", "Guiju", "messaging")
    assert harness.registrations.problems == []
    assert set(harness.registrations.actions) == {
        "send_email",
        "post_wecom",
        "post_dingtalk",
        "post_feishu",
        "post_slack",
        "deliver_notification",
    }
    assert set(info.scopes) == {
        "mail:send",
        "files:read",
        "http:qyapi.weixin.qq.com",
        "http:oapi.dingtalk.com",
        "http:open.feishu.cn",
        "http:open.larksuite.com",
        "http:hooks.slack.com",
    }
    assert manifest_problems(manifest_from_plugin(info, harness.registrations)) == []


def test_every_action_has_input_and_output_schemas() -> None:
    for action in harness.registrations.actions.values():
        assert action.input_schema is not None and action.output_schema is not None, action.name
        assert registry.json_schema_problem(action.input_schema) is None
        assert registry.json_schema_problem(action.output_schema) is None


def test_the_settings_mark_secrets_write_only_and_explain_every_field() -> None:
    schema = harness.registrations.settings_schema
    assert schema is not None
    robot_secrets = {f"robot_{n}_{kind}" for n in range(1, ROBOT_SLOTS + 1) for kind in ("webhook_url", "secret")}
    assert registry.secret_fields(schema) == {"smtp_password", *robot_secrets}
    for name, field in schema["properties"].items():
        assert field.get("title") and field.get("description"), name
    assert input_problems(
        schema, {"smtp_security": "ssl", "robots": [{"name": "Bad Name", "channel": "qq", "slot": 9}]}
    )


# ---------------------------------------------------------------- health


async def test_health_logs_in_to_the_mail_server(mail_server_factory: Any, certificates: Any) -> None:
    server = mail_server_factory("starttls")
    health = await harness.health(mail_context(server, certificates))
    assert health.ok, health.message
    assert health.message == f"e-mail: logged in as robot@guiju.test at {MAIL_HOST}:{server.port} (starttls)"
    assert server.handler.received == []  # a check sends nothing

    wrong = await harness.health(mail_context(server, certificates, password="nope"))
    assert not wrong.ok
    assert "refused the user name or password: 535" in wrong.message


async def test_health_reports_robot_configuration_problems() -> None:
    context = MailContext(
        plugin="messaging",
        config={
            "robots": [
                {"name": "ops", "channel": "wecom", "slot": 1},
                {"name": "ops", "channel": "feishu", "slot": 1},
                {"name": "alerts", "channel": "slack", "slot": 2},
            ],
            "notification_channels": ["email", "dingtalk"],
        },
        secrets={
            "robot_1_webhook_url": f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={WECOM_KEY}",
            "robot_2_webhook_url": "https://hooks.slack.com/workflows/abc",
        },
    )
    health = await harness.health(context)
    assert not health.ok
    for problem in (
        "robots: the name 'ops' is used 2 times",
        "robots: slot 1 is used by 2 robots",
        "Feishu/Lark robot 'ops': the Feishu/Lark webhook URL must be on open.feishu.cn or open.larksuite.com",
        "Slack robot 'alerts': a Slack webhook URL looks like",
        "notifications go to e-mail, but no SMTP server is set",
        "notifications go to DingTalk, but no such robot is configured",
    ):
        assert problem in health.message
    assert WECOM_KEY not in health.message  # a webhook URL is a secret: never echoed


async def test_health_with_nothing_configured() -> None:
    health = await harness.health(MailContext(plugin="messaging"))
    assert not health.ok
    assert health.message == "nothing is configured yet: set up an SMTP server or add a robot"


# ---------------------------------------------------------------- notifications


def _notification_context(server: Any, certificates: Any, vendors: Vendors, channels: list[str]) -> MailContext:
    return MailContext(
        plugin="messaging",
        config={
            **mail_config(server, certificates),
            "notification_channels": channels,
            "robots": [
                {"name": "ops", "channel": "wecom", "slot": 1, "locale": "zh-CN"},
                {"name": "intl", "channel": "slack", "slot": 2, "locale": "en"},
            ],
        },
        secrets={
            "smtp_password": "correct horse battery staple",
            "robot_1_webhook_url": vendors.url("wecom"),
            "robot_2_webhook_url": vendors.url("slack"),
        },
        hosts={MAIL_HOST, "127.0.0.1"},
        addresses={MAIL_HOST: "127.0.0.1"},
        http_handler=forward,
    )


async def test_deliver_notification_reports_each_channel(
    mail_server_factory: Any, certificates: Any, vendors: Vendors
) -> None:
    server = mail_server_factory("starttls")
    context = _notification_context(server, certificates, vendors, ["email", "wecom", "slack", "feishu"])
    vendors.force("slack", 410, "channel_is_archived")
    output = await harness.run_action(
        "deliver_notification",
        {
            "recipients": [
                {"email": "wang@example.com", "locale": "zh-CN", "name": "王芳", "user_id": "u1"},
                {"email": "ada@example.com", "locale": "en", "user_id": "u2"},
                {"user_id": "u3"},  # no e-mail address: reached in the app only
            ],
            "title": {"zh-CN": "采购单待审批", "en": "A purchase order awaits approval"},
            "body": {"zh-CN": "PO-9 金额 ¥12,000", "en": "PO-9, ¥12,000"},
            "link": "https://guiju.test/po/9",
        },
        context,
    )
    assert input_problems(harness.registrations.actions["deliver_notification"].output_schema or {}, output) == []
    by_channel = {entry["channel"]: entry for entry in output["channels"]}
    assert by_channel["email"]["status"] == "sent"
    assert sorted(by_channel["email"]["recipients"]) == ["ada@example.com", "wang@example.com"]
    assert by_channel["wecom"] == {
        "channel": "wecom",
        "status": "sent",
        "detail": "posted to robot 'ops'",
        "retryable": False,
    }
    assert by_channel["slack"]["status"] == "failed"
    assert "channel_is_archived" in by_channel["slack"]["detail"]
    assert by_channel["feishu"] == {
        "channel": "feishu",
        "status": "skipped",
        "detail": "no Feishu/Lark robot is configured",
    }

    subjects = sorted(r.message["Subject"] for r in server.handler.received)
    assert subjects == ["A purchase order awaits approval", "采购单待审批"]
    card = vendors.received["wecom"][0]["json"]["template_card"]
    assert card["main_title"]["title"] == "采购单待审批"
    assert card["card_action"]["url"] == "https://guiju.test/po/9"


async def test_deliver_notification_fails_retryably_only_when_nothing_was_delivered(
    mail_server_factory: Any, certificates: Any, vendors: Vendors
) -> None:
    server = mail_server_factory("starttls")
    context = _notification_context(server, certificates, vendors, ["wecom", "slack"])
    vendors.force("wecom", 200, {"errcode": 45009, "errmsg": "api freq out of limit"})
    vendors.force("slack", 503, "service unavailable")
    with pytest.raises(ActionFailed, match="No channel delivered the notification: wecom: WeCom error 45009") as failed:
        await harness.run_action("deliver_notification", {"recipients": [], "title": "t"}, context)
    assert failed.value.retryable is True


async def test_robot_and_email_outputs_match_their_schemas(
    mail_server_factory: Any, certificates: Any, vendors: Vendors
) -> None:
    server = mail_server_factory("starttls")
    context = _notification_context(server, certificates, vendors, [])
    email = await harness.run_action(
        "send_email", {"to": [{"address": "a@example.com"}], "subject": "s", "text": "t"}, context
    )
    wecom = await harness.run_action("post_wecom", {"text": "hi"}, context)
    for name, output in (("send_email", email), ("post_wecom", wecom)):
        assert input_problems(harness.registrations.actions[name].output_schema or {}, output) == [], name
