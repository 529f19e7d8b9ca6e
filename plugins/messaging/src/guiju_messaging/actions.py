"""The plugin's actions: ``send_email``, ``post_wecom``/``post_dingtalk``/``post_feishu``/
``post_slack`` and ``deliver_notification``.

``send_email`` depends on nothing but its context's configuration, secrets and files and its input,
so the platform sends its own mail (verification, password reset, invitation) by calling it with a
context holding the platform's SMTP settings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from typing import Any

from guiju_sdk import ActionCall, ActionFailed, PluginContext

from guiju_messaging import mail, robots
from guiju_messaging.schemas import (
    DELIVER_NOTIFICATION_INPUT,
    SEND_EMAIL_INPUT,
    input_problems,
    robot_input_schema,
)
from guiju_messaging.templates import (
    LOCALES,
    Escaping,
    TemplateProblems,
    choose_locale,
    normalize_locale,
    render_parts,
    slack_escape,
)

#: Channels whose cards need a link (their card formats are built around a button).
CARD_NEEDS_LINK = frozenset({"wecom", "dingtalk"})


def _context(call: ActionCall) -> PluginContext:
    if call.context is None:
        raise ActionFailed("The messaging plugin needs a host with plugin API 1.3 or later (no context was given)")
    return call.context


def _check_input(schema: dict[str, Any], data: object, what: str) -> None:
    problems = input_problems(schema, data)
    if problems:
        raise ActionFailed(f"{what}: " + "; ".join(problems))


# ---------------------------------------------------------------- e-mail


@dataclass(frozen=True)
class Recipient:
    """A parsed recipient and the language they read."""

    address: Address
    locale: str | None


@dataclass(frozen=True)
class PlannedMail:
    """One message to send: to one language group, with its rendering."""

    locale: str | None
    envelope: mail.Envelope
    subject: str
    text: str | None
    html: str | None


def _recipients(entries: Sequence[Mapping[str, Any]], pointer: str, problems: list[str]) -> list[Recipient]:
    found = []
    for index, entry in enumerate(entries):
        address, problem = mail.parse_address(str(entry.get("address", "")), str(entry.get("name") or ""))
        if address is None:
            problems.append(f"{pointer}/{index}/address: {problem}")
        else:
            found.append(Recipient(address, normalize_locale(entry.get("locale"))))
    return found


def _rendered_mail(
    template: Mapping[str, Mapping[str, str]], variables: Mapping[str, Any], locale: str
) -> tuple[str, str | None, str | None]:
    parts = dict(template[locale])
    escaping: dict[str, Escaping] = {"html": "html"}
    rendered = render_parts(locale, parts, variables, escaping)
    return rendered["subject"], rendered.get("text"), rendered.get("html")


def plan_mails(
    data: Mapping[str, Any], default_locale: object, problems: list[str]
) -> tuple[list[PlannedMail], Address | None]:
    """The messages ``send_email``'s input asks for (one per language group with a template, one in
    all without), and the Reply-To; appends every problem found to ``problems``."""
    kinds = {kind: _recipients(data.get(kind) or [], f"/{kind}", problems) for kind in ("to", "cc", "bcc")}
    reply_to = None
    if data.get("reply_to"):
        reply_to, problem = mail.parse_address(
            str(data["reply_to"].get("address", "")), str(data["reply_to"].get("name") or "")
        )
        if problem:
            problems.append(f"/reply_to/address: {problem}")
    template = data.get("template")
    if not template:
        envelope = mail.Envelope(*([r.address for r in kinds[kind]] for kind in ("to", "cc", "bcc")))
        return [PlannedMail(None, envelope, data["subject"], data.get("text"), data.get("html"))], reply_to
    variables = data.get("variables") or {}
    groups: dict[str, mail.Envelope] = {}
    for kind in ("to", "cc", "bcc"):
        for recipient in kinds[kind]:
            locale = choose_locale(template.keys(), recipient.locale, default_locale)
            envelope = groups.setdefault(locale, mail.Envelope([]))
            getattr(envelope, kind).append(recipient.address)
    planned = []
    for locale in LOCALES:  # a stable order: the same groups, the same Message-IDs, on every retry
        if locale not in groups:
            continue
        try:
            subject, text, html = _rendered_mail(template, variables, locale)
        except TemplateProblems as exc:
            problems.extend(exc.problems)
            continue
        planned.append(PlannedMail(locale, groups[locale], subject, text, html))
    return planned, reply_to


async def send_planned(
    context: PluginContext,
    settings: mail.SmtpSettings,
    planned: Sequence[PlannedMail],
    *,
    attachments: Sequence[mail.Attachment] = (),
    reply_to: Address | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Send each planned message over one SMTP session; the output of ``send_email``."""
    where = f"{settings.host}:{settings.port}"
    domain = settings.from_address.domain
    messages: list[dict[str, Any]] = []
    refused: dict[str, str] = {}
    async with mail.SmtpSession(context, settings) as smtp:
        for plan in planned:
            message_id = mail.message_id(idempotency_key, plan.locale or "all", domain)
            message = mail.build_message(
                sender=settings.from_address,
                envelope=plan.envelope,
                subject=plan.subject,
                text=plan.text,
                html=plan.html,
                attachments=attachments,
                reply_to=reply_to,
                message_id=message_id,
            )
            try:
                accepted, refusals = await mail.deliver(
                    smtp, message, settings.from_address.addr_spec, plan.envelope.recipients, where
                )
            except ActionFailed as exc:
                if not messages:
                    raise
                sent = ", ".join(f"{m['locale']} ({len(m['accepted'])} recipients)" for m in messages)
                raise ActionFailed(
                    f"Sent the {sent} message(s), then: {exc}", retryable=exc.retryable, retry_after=exc.retry_after
                ) from exc
            refused.update(refusals)
            messages.append({"message_id": message_id, "locale": plan.locale, "accepted": accepted})
            context.log.info("mail %s sent: %d accepted, %d refused", message_id, len(accepted), len(refusals))
    return {
        "message_id": messages[0]["message_id"],
        "accepted": [address for m in messages for address in m["accepted"]],
        "refused": [{"address": address, "reply": reply} for address, reply in refused.items()],
        "messages": messages,
    }


async def send_email(call: ActionCall) -> dict[str, Any]:
    """The action ``send_email``: one e-mail, or one per language group when it is a template.

    Works from ``call.context``'s configuration (``smtp_*`` settings, the ``smtp_password`` secret)
    and ``call.input`` alone; attachments are read with ``context.read_file``.
    """
    context = _context(call)
    _check_input(SEND_EMAIL_INPUT, call.input, "The e-mail cannot be sent")
    settings = mail.smtp_settings(context)
    problems: list[str] = []
    planned, reply_to = plan_mails(call.input, context.config.get("default_locale"), problems)
    if problems:
        raise ActionFailed("The e-mail cannot be sent: " + "; ".join(problems))
    attachments = await mail.read_attachments(
        context, call.input.get("attachments") or [], settings.max_attachment_bytes
    )
    return await send_planned(
        context,
        settings,
        planned,
        attachments=attachments,
        reply_to=reply_to,
        idempotency_key=call.idempotency_key or context.idempotency_key,
    )


# ---------------------------------------------------------------- robots


def robot_post(
    channel: str, data: Mapping[str, Any], robot: robots.Robot, default_locale: object
) -> tuple[robots.Post, str]:
    """The post ``data`` asks for, in ``robot``'s language, and that language."""
    template = data.get("template")
    if template:
        locale = choose_locale(template.keys(), robot.locale, default_locale)
        escaping: Escaping = "slack" if channel == "slack" else "none"
        try:
            variables = data.get("variables") or {}
            rendered = render_parts(locale, template[locale], variables, dict.fromkeys(("title", "text"), escaping))
        except TemplateProblems as exc:
            raise ActionFailed("The message cannot be posted: " + "; ".join(exc.problems)) from exc
        title, text = rendered.get("title"), rendered["text"]
    else:
        locale, title, text = robot.locale, data.get("title"), data["text"]
    if not text.strip():
        raise ActionFailed("The message cannot be posted: its text is empty (after rendering the template)")
    post = robots.Post(
        format=data.get("format") or "text",
        text=text,
        title=title,
        link=data.get("link"),
        mention_all=bool(data.get("mention_all")),
    )
    return post, locale


def robot_action(channel: str) -> Callable[[ActionCall], Awaitable[dict[str, Any]]]:
    """The action posting to ``channel``'s robot."""
    schema = robot_input_schema(channel, card_needs_link=channel in CARD_NEEDS_LINK)
    vendor = robots.VENDOR_NAMES[channel]

    async def post(call: ActionCall) -> dict[str, Any]:
        context = _context(call)
        _check_input(schema, call.input, f"The {vendor} message cannot be posted")
        robot = robots.find_robot(context, channel, call.input.get("robot"))
        message, locale = robot_post(channel, call.input, robot, context.config.get("default_locale"))
        await robots.post_to_robot(context, robot, message)
        return {"channel": channel, "robot": robot.name, "locale": locale, "format": message.format}

    post.__name__ = post.__qualname__ = f"post_{channel}"
    post.__doc__ = f"The action ``post_{channel}``: post a message to a {vendor} group robot."
    return post


# ---------------------------------------------------------------- notifications

NOTIFICATION_EMAIL: dict[str, dict[str, str]] = {
    "zh-CN": {
        "subject": "{{ title }}",
        "text": "{{ title }}\n\n{% if body %}{{ body }}\n\n{% endif %}{% if link %}查看详情：{{ link }}\n{% endif %}",
        "html": '<div style="font-family:sans-serif;max-width:560px">'
        '<h2 style="font-size:18px">{{ title }}</h2>'
        '{% if body %}<p style="white-space:pre-line">{{ body }}</p>{% endif %}'
        '{% if link %}<p><a href="{{ link }}">查看详情</a></p>{% endif %}</div>',
    },
    "en": {
        "subject": "{{ title }}",
        "text": "{{ title }}\n\n{% if body %}{{ body }}\n\n{% endif %}"
        "{% if link %}View details: {{ link }}\n{% endif %}",
        "html": '<div style="font-family:sans-serif;max-width:560px">'
        '<h2 style="font-size:18px">{{ title }}</h2>'
        '{% if body %}<p style="white-space:pre-line">{{ body }}</p>{% endif %}'
        '{% if link %}<p><a href="{{ link }}">View details</a></p>{% endif %}</div>',
    },
}


def _localized(value: object, locale: str, default_locale: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value:
        return str(value[choose_locale(value.keys(), locale, default_locale)])
    return ""


def _entry(channel: str, status: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"channel": channel, "status": status, "detail": detail, **extra}


async def _notify_by_email(context: PluginContext, data: Mapping[str, Any]) -> dict[str, Any]:
    if not mail.smtp_configured(context.config):
        return _entry("email", "skipped", "e-mail is not configured (no SMTP server)")
    default_locale = context.config.get("default_locale")
    problems: list[str] = []
    groups: dict[str, mail.Envelope] = {}
    for index, recipient in enumerate(data.get("recipients") or []):
        if not recipient.get("email"):
            continue
        address, problem = mail.parse_address(str(recipient["email"]), str(recipient.get("name") or ""))
        if address is None:
            problems.append(f"/recipients/{index}/email: {problem}")
            continue
        locale = choose_locale(LOCALES, recipient.get("locale"), default_locale)
        groups.setdefault(locale, mail.Envelope([])).to.append(address)
    if problems:
        return _entry("email", "failed", "; ".join(problems), retryable=False)
    if not groups:
        return _entry("email", "skipped", "no recipient has an e-mail address")
    planned = []
    for locale in LOCALES:
        if locale in groups:
            variables = {
                "title": _localized(data["title"], locale, default_locale),
                "body": _localized(data.get("body"), locale, default_locale),
                "link": data.get("link") or "",
            }
            subject, text, html = _rendered_mail(NOTIFICATION_EMAIL, variables, locale)
            planned.append(PlannedMail(locale, groups[locale], subject, text, html))
    try:
        settings = mail.smtp_settings(context)
        sent = await send_planned(context, settings, planned, idempotency_key=context.idempotency_key)
    except ActionFailed as exc:
        return _entry("email", "failed", str(exc), retryable=exc.retryable)
    refused = f"; refused: {', '.join(r['address'] for r in sent['refused'])}" if sent["refused"] else ""
    return _entry(
        "email", "sent", f"{len(sent['messages'])} message(s){refused}", retryable=False, recipients=sent["accepted"]
    )


async def _notify_by_robot(context: PluginContext, channel: str, data: Mapping[str, Any]) -> dict[str, Any]:
    if not any(r.get("channel") == channel for r in robots.configured_robots(context.config)):
        return _entry(channel, "skipped", f"no {robots.VENDOR_NAMES[channel]} robot is configured")
    try:
        robot = robots.find_robot(context, channel, None)
        default_locale = context.config.get("default_locale")
        title = _localized(data["title"], robot.locale, default_locale)
        body = _localized(data.get("body"), robot.locale, default_locale)
        if channel == "slack":  # the notification is plain text: nothing in it may act as Slack markup
            title, body = slack_escape(title), slack_escape(body)
        link = data.get("link")
        post = robots.Post(
            format="card" if link else "text", text=body or title, title=title if body else None, link=link
        )
        await robots.post_to_robot(context, robot, post)
    except ActionFailed as exc:
        return _entry(channel, "failed", str(exc), retryable=exc.retryable)
    return _entry(channel, "sent", f"posted to robot {robot.name!r}", retryable=False)


async def deliver_notification(call: ActionCall) -> dict[str, Any]:
    """The action ``deliver_notification``: send a workspace notification on through each channel of
    the ``notification_channels`` setting, reporting per channel what was sent or why not.

    A channel's failure does not stop the others; only when every channel tried failed, and one of
    them may succeed later, does the action fail (retryable), so a retry never repeats a success.
    """
    context = _context(call)
    _check_input(DELIVER_NOTIFICATION_INPUT, call.input, "The notification cannot be delivered")
    channels = context.config.get("notification_channels") or ["email"]
    report = []
    for channel in channels:
        if channel == "email":
            report.append(await _notify_by_email(context, call.input))
        elif channel in robots.VENDOR_NAMES:
            report.append(await _notify_by_robot(context, channel, call.input))
        else:  # the settings schema allows none; an old configuration may still hold one
            context.log.warning("unknown notification channel %r skipped", channel)
    tried = [entry for entry in report if entry["status"] != "skipped"]
    if tried and all(entry["status"] == "failed" for entry in tried) and any(e.get("retryable") for e in tried):
        raise ActionFailed(
            "No channel delivered the notification: " + "; ".join(f"{e['channel']}: {e['detail']}" for e in tried),
            retryable=True,
        )
    return {"channels": report}
