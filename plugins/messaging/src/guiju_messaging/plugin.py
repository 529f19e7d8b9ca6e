"""The hooks of the built-in plugin messaging: e-mail over SMTP, and posts to WeCom, DingTalk,
Feishu/Lark and Slack group robots.

The host finds this module through the entry point in pyproject.toml; docs/plugins/messaging.md
tells a tenant's admin how to configure it.
"""

from __future__ import annotations

from collections import Counter

from guiju_sdk import (
    ActionFailed,
    Health,
    PluginContext,
    PluginInfo,
    Register,
    RegisterAction,
    RegisterHealth,
    RegisterSettingsSchema,
    hookimpl,
)

from guiju_messaging import mail, robots
from guiju_messaging.actions import CARD_NEEDS_LINK, deliver_notification, robot_action, send_email
from guiju_messaging.schemas import (
    CHANNELS,
    DELIVER_NOTIFICATION_INPUT,
    DELIVER_NOTIFICATION_OUTPUT,
    ROBOT_OUTPUT,
    SEND_EMAIL_INPUT,
    SEND_EMAIL_OUTPUT,
    SETTINGS_SCHEMA,
    robot_input_schema,
)

__all__ = ["deliver_notification", "send_email"]

SCOPES: tuple[str, ...] = (
    "mail:send",
    "files:read",
    *(f"http:{host}" for channel in CHANNELS for host in robots.VENDOR_HOSTS[channel]),
)

ROBOT_LABELS = {
    "wecom": {"zh-CN": "发送到企业微信群机器人", "en": "Post to a WeCom group robot"},
    "dingtalk": {"zh-CN": "发送到钉钉群机器人", "en": "Post to a DingTalk group robot"},
    "feishu": {"zh-CN": "发送到飞书群机器人", "en": "Post to a Feishu/Lark group bot"},
    "slack": {"zh-CN": "发送到 Slack 频道", "en": "Post to a Slack channel"},
}


@hookimpl
def guiju_plugin_info(register: Register) -> None:
    register(
        PluginInfo(
            name="messaging",
            version="1.0.0",
            publisher="Guiju",
            summary_en="Send e-mail and post to WeCom, DingTalk, Feishu/Lark and Slack robots.",
            summary_zh="发送邮件，并向企业微信、钉钉、飞书和 Slack 机器人推送消息。",
            api_range=">=1.3,<2.0",
            category="messaging",
            scopes=SCOPES,
        )
    )


@hookimpl
def guiju_actions(register: RegisterAction) -> None:
    register(
        "send_email",
        send_email,
        labels={"zh-CN": "发送邮件", "en": "Send an e-mail"},
        input_schema=SEND_EMAIL_INPUT,
        output_schema=SEND_EMAIL_OUTPUT,
        time_limit_ms=120_000,
    )
    for channel in CHANNELS:
        register(
            f"post_{channel}",
            robot_action(channel),
            labels=ROBOT_LABELS[channel],
            input_schema=robot_input_schema(channel, card_needs_link=channel in CARD_NEEDS_LINK),
            output_schema=ROBOT_OUTPUT,
            time_limit_ms=30_000,
        )
    register(
        "deliver_notification",
        deliver_notification,
        labels={"zh-CN": "转发通知", "en": "Deliver a notification"},
        input_schema=DELIVER_NOTIFICATION_INPUT,
        output_schema=DELIVER_NOTIFICATION_OUTPUT,
        time_limit_ms=120_000,
    )


@hookimpl
def guiju_settings_schema(register: RegisterSettingsSchema) -> None:
    register(SETTINGS_SCHEMA)


async def check_configuration(context: PluginContext) -> Health:
    """What works and what does not: logs in to the mail server when e-mail is set up (connect,
    EHLO, STARTTLS/TLS, AUTH; nothing is sent) and checks each robot's configuration (robots are not
    posted to: a check must not spam a group)."""
    config = context.config
    problems: list[str] = []
    working: list[str] = []
    if mail.smtp_configured(config):
        try:
            settings = mail.smtp_settings(context)
            async with mail.SmtpSession(context, settings) as smtp:
                await smtp.ehlo()
            how = f"logged in as {settings.username}" if settings.username else "connected"
            working.append(f"e-mail: {how} at {settings.host}:{settings.port} ({settings.security})")
        except ActionFailed as exc:
            problems.append(f"e-mail: {exc}")
        except Exception as exc:  # an SMTP failure mail.SmtpSession did not name: still the admin's to see
            problems.append(f"e-mail: {type(exc).__name__}: {exc}")
    entries = robots.configured_robots(config)
    for name, count in Counter(str(e.get("name")) for e in entries).items():
        if count > 1:
            problems.append(f"robots: the name {name!r} is used {count} times")
    for slot, count in Counter(e.get("slot") for e in entries).items():
        if count > 1:
            problems.append(f"robots: slot {slot} is used by {count} robots; each needs its own")
    for entry in entries:
        robot, robot_problems = robots.robot_from_entry(context, entry)
        vendor = robots.VENDOR_NAMES.get(str(entry.get("channel")), str(entry.get("channel")))
        if robot is None:
            problems.append(f"{vendor} robot {entry.get('name')!r}: " + "; ".join(robot_problems))
        else:
            signed = " (signed)" if robot.secret and robot.channel in ("dingtalk", "feishu") else ""
            working.append(f"{vendor} robot {robot.name!r}: webhook URL looks right{signed}")
    for channel in config.get("notification_channels") or []:
        if channel == "email" and not mail.smtp_configured(config):
            problems.append("notifications go to e-mail, but no SMTP server is set")
        elif channel in CHANNELS and not any(e.get("channel") == channel for e in entries):
            problems.append(f"notifications go to {robots.VENDOR_NAMES[channel]}, but no such robot is configured")
    if not problems and not working:
        problems.append("nothing is configured yet: set up an SMTP server or add a robot")
    if problems:
        return Health(False, "; ".join(problems))
    return Health(True, "; ".join(working))


@hookimpl
async def guiju_health_check(context: PluginContext, register: RegisterHealth) -> None:
    register(await check_configuration(context))
