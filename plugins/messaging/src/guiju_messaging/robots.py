"""Group robots: WeCom (企业微信), DingTalk (钉钉), Feishu/Lark (飞书) and Slack.

Each vendor has a webhook address that is itself the credential (WeCom's ``key``, DingTalk's
``access_token``, Feishu's hook token, Slack's whole URL), an optional signature (DingTalk 加签,
Feishu 签名校验), a message format and its own way of saying what went wrong:

- WeCom and DingTalk answer HTTP 200 with ``{"errcode", "errmsg"}``;
- Feishu/Lark answers ``{"code", "msg", "data"}`` (older deployments ``{"StatusCode", "StatusMessage"}``);
- Slack answers ``ok`` or an HTTP error status with the error's name as plain text.

Rate limits, 429 and 5xx become retryable failures (with ``retry_after``); everything the tenant
must fix (a wrong or revoked webhook, a bad signature, a keyword the robot demands) fails at once,
naming the vendor's code.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from guiju_sdk import ActionFailed, HttpResponse, PluginContext, ScopeDenied

from guiju_messaging.schemas import CHANNELS
from guiju_messaging.templates import FALLBACK_LOCALE, normalize_locale

VENDOR_NAMES = {"wecom": "WeCom", "dingtalk": "DingTalk", "feishu": "Feishu/Lark", "slack": "Slack"}
#: The hosts each channel's webhooks live on (the manifest declares them all).
VENDOR_HOSTS: dict[str, tuple[str, ...]] = {
    "wecom": ("qyapi.weixin.qq.com",),
    "dingtalk": ("oapi.dingtalk.com",),
    "feishu": ("open.feishu.cn", "open.larksuite.com"),
    "slack": ("hooks.slack.com",),
}
#: Hosts whose webhooks may be plain http: a vendor emulator on the developer's own machine. The
#: platform itself refuses http and loopback addresses, so this never reaches a real deployment.
LOCAL_TEST_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
HTTP_TIMEOUT_SECONDS = 10.0

#: Waits after a vendor's rate limit: WeCom allows 20 messages a minute per robot; DingTalk 20 a
#: minute, and limits a robot that exceeds it for 10 minutes; Feishu 100 a minute and 5 a second.
WECOM_RATE_LIMIT_SECONDS = 60.0
DINGTALK_RATE_LIMIT_SECONDS = 600.0
FEISHU_RATE_LIMIT_SECONDS = 60.0
DEFAULT_RETRY_SECONDS = 30.0

# Vendors' limits on a message's size, checked before posting so the error is ours and clear.
WECOM_TEXT_MAX_BYTES = 2048
WECOM_MARKDOWN_MAX_BYTES = 4096
DINGTALK_MAX_BYTES = 20_000
FEISHU_MAX_BYTES = 30_000
SLACK_SECTION_MAX_CHARS = 3000
SLACK_HEADER_MAX_CHARS = 150

LINK_LABELS = {"zh-CN": "查看详情", "en": "View details"}

WECOM_ERRORS: dict[int, str] = {
    93000: "the webhook URL is invalid: the robot was removed or its key is wrong",
    40008: "the message type is not supported",
    40058: "a field of the message is invalid or too long",
    44004: "the message is empty",
}
DINGTALK_ERRORS: dict[int, str] = {
    300001: "the access token does not exist: the webhook URL is wrong or the robot was removed",
    310000: "the security settings refused the message: a wrong 加签 secret, a keyword the robot demands "
    "missing from the message, or an address outside its IP allowlist (errmsg says which)",
    400013: "the group was dismissed",
    400101: "the access token does not exist: the webhook URL is wrong",
    400102: "the robot is disabled (机器人已停用)",
    400105: "the message type is not supported",
    400106: "the robot does not exist in the group",
    40035: "the message body is missing",
    43004: "the Content-Type is not application/json",
}
FEISHU_ERRORS: dict[int, str] = {
    9499: "Feishu/Lark could not read the message (Bad Request)",
    19001: "a parameter is invalid: usually the webhook URL's token is wrong or the robot was removed",
    19002: "the message type is missing",
    19021: "the signature does not match or the timestamp is more than an hour off: check the 签名校验 secret",
    19022: "the sending address is not in the robot's IP allowlist",
    19024: "the message lacks the keyword the robot's 自定义关键词 setting demands",
}
SLACK_ERRORS: dict[str, str] = {
    "invalid_payload": "Slack could not read the message",
    "user_not_found": "a mentioned user does not exist",
    "missing_text_or_fallback_or_attachments": "the message has no text",
    "invalid_blocks": "the message's blocks are invalid",
    "invalid_blocks_format": "the message's blocks are invalid",
    "action_prohibited": "the workspace's admin restricted posting through this webhook",
    "invalid_token": "the webhook URL's token is invalid",
    "channel_not_found": "the channel does not exist",
    "no_service": "the webhook URL is wrong, or the app or webhook was removed",
    "no_team": "the workspace of the webhook no longer exists",
    "channel_is_archived": "the channel is archived",
}
RETRYABLE_CODES: dict[str, dict[int, float]] = {
    "wecom": {45009: WECOM_RATE_LIMIT_SECONDS, -1: DEFAULT_RETRY_SECONDS},
    "dingtalk": {130101: DINGTALK_RATE_LIMIT_SECONDS, 410100: DINGTALK_RATE_LIMIT_SECONDS, -1: DEFAULT_RETRY_SECONDS},
    "feishu": {9499: FEISHU_RATE_LIMIT_SECONDS, 11232: FEISHU_RATE_LIMIT_SECONDS},
}
FEISHU_BAD_REQUEST = 9499


def _says_too_many(message: str) -> bool:
    lowered = message.lower()
    return "too many" in lowered or "limit" in lowered


@dataclass(frozen=True)
class Robot:
    """A configured robot: where to post and how to sign."""

    name: str
    channel: str
    locale: str
    webhook_url: str
    secret: str | None


@dataclass(frozen=True)
class Post:
    """What to post, already rendered in the robot's language."""

    format: str
    text: str
    title: str | None = None
    link: str | None = None
    mention_all: bool = False


# ---------------------------------------------------------------- configuration


def configured_robots(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``robots`` setting, each entry a dict (malformed entries left out)."""
    robots = config.get("robots") or []
    return [r for r in robots if isinstance(r, dict)] if isinstance(robots, list) else []


def find_robot(context: PluginContext, channel: str, name: str | None) -> Robot:
    """The robot ``name`` of ``channel`` (the first of the channel when ``name`` is ``None``), with its
    secrets; fails permanently, saying what to configure, when there is none or it is incomplete."""
    vendor = VENDOR_NAMES[channel]
    candidates = [r for r in configured_robots(context.config) if r.get("channel") == channel]
    if name is not None:
        candidates = [r for r in candidates if r.get("name") == name]
    if not candidates:
        wanted = f"{vendor} robot named {name!r}" if name else f"{vendor} robot"
        raise ActionFailed(f"There is no {wanted}: add it under Robots in the messaging plugin's settings.")
    entry = candidates[0]
    robot, problems = robot_from_entry(context, entry)
    if robot is None:
        raise ActionFailed(f"{vendor} robot {entry.get('name')!r}: " + "; ".join(problems))
    return robot


def robot_from_entry(context: PluginContext, entry: Mapping[str, Any]) -> tuple[Robot | None, list[str]]:
    """The robot a ``robots`` entry describes, or ``None`` and every problem of its configuration."""
    channel = str(entry.get("channel"))
    slot = entry.get("slot")
    problems: list[str] = []
    if channel not in CHANNELS:
        return None, [f"unknown channel {channel!r}"]
    if not isinstance(slot, int) or isinstance(slot, bool):
        return None, ["it names no secret slot"]
    url = (context.secret(f"robot_{slot}_webhook_url") or "").strip()
    secret = (context.secret(f"robot_{slot}_secret") or "").strip() or None
    if not url:
        problems.append(f"'Robot slot {slot}: webhook URL' is empty")
    else:
        problems.extend(webhook_url_problems(channel, url))
    if problems:
        return None, problems
    locale = normalize_locale(entry.get("locale")) or normalize_locale(context.config.get("default_locale"))
    return Robot(str(entry.get("name")), channel, locale or FALLBACK_LOCALE, url, secret), []


_FEISHU_HOOK = re.compile(r"/open-apis/bot/v2/hook/[A-Za-z0-9-]{8,}")
_SLACK_HOOK = re.compile(r"/services/[A-Za-z0-9]+/[A-Za-z0-9]+/[A-Za-z0-9]+")


def webhook_url_problems(channel: str, url: str) -> list[str]:
    """What is wrong with ``url`` as a webhook of ``channel``: it must be https on the vendor's host,
    with the path and token the vendor gives out (plain http is accepted only for a vendor
    emulator on the local machine, for testing). Never echoes the URL: it is a secret."""
    vendor = VENDOR_NAMES[channel]
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return [f"the {vendor} webhook URL is not a URL"]
    local = host in LOCAL_TEST_HOSTS
    problems: list[str] = []
    if not (parts.scheme == "https" or (parts.scheme == "http" and local)):
        problems.append(f"the {vendor} webhook URL must start with https://")
    if not local and host not in VENDOR_HOSTS[channel]:
        problems.append(f"the {vendor} webhook URL must be on {' or '.join(VENDOR_HOSTS[channel])}, not {host!r}")
    query = dict(parse_qsl(parts.query))
    if channel == "wecom" and (parts.path != "/cgi-bin/webhook/send" or not query.get("key")):
        problems.append("a WeCom webhook URL looks like https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…")
    elif channel == "dingtalk" and (parts.path != "/robot/send" or not query.get("access_token")):
        problems.append("a DingTalk webhook URL looks like https://oapi.dingtalk.com/robot/send?access_token=…")
    elif channel == "feishu" and not _FEISHU_HOOK.fullmatch(parts.path):
        problems.append("a Feishu/Lark webhook URL looks like https://open.feishu.cn/open-apis/bot/v2/hook/…")
    elif channel == "slack" and not _SLACK_HOOK.fullmatch(parts.path):
        problems.append("a Slack webhook URL looks like https://hooks.slack.com/services/T…/B…/…")
    return problems


# ---------------------------------------------------------------- signatures


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's 加签: Base64 of HMAC-SHA256 keyed with the secret over ``"<timestamp ms>\\n<secret>"``
    (URL-encoding is left to whoever puts it in the query)."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Feishu/Lark's 签名校验: Base64 of HMAC-SHA256 keyed with ``"<timestamp s>\\n<secret>"`` over
    nothing."""
    digest = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _with_query(url: str, extra: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *extra.items()]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


# ---------------------------------------------------------------- payloads


def _too_long(vendor: str, what: str, text: str, limit: int, *, unit: str = "bytes") -> str | None:
    size = len(text.encode()) if unit == "bytes" else len(text)
    if size > limit:
        return f"{vendor} accepts at most {limit} {unit} of {what}; this one has {size}"
    return None


def _label(locale: str) -> str:
    return LINK_LABELS.get(locale, LINK_LABELS[FALLBACK_LOCALE])


def _fail_if(problems: list[str | None]) -> None:
    found = [p for p in problems if p]
    if found:
        raise ActionFailed("; ".join(found))


def wecom_payload(post: Post, locale: str) -> dict[str, Any]:
    """A WeCom group robot message: ``text``, ``markdown`` or a ``template_card`` (text_notice)."""
    if post.mention_all and post.format != "text":
        raise ActionFailed("A WeCom robot can mention everyone in text messages only: post text, or mention no one")
    if post.format == "text":
        content = f"{post.title}\n{post.text}" if post.title else post.text
        if post.link:
            content = f"{content}\n{post.link}"
        _fail_if([_too_long("WeCom", "text", content, WECOM_TEXT_MAX_BYTES)])
        text: dict[str, Any] = {"content": content}
        if post.mention_all:
            text["mentioned_list"] = ["@all"]
        return {"msgtype": "text", "text": text}
    if post.format == "markdown":
        content = f"### {post.title}\n{post.text}" if post.title else post.text
        if post.link:
            content = f"{content}\n[{_label(locale)}]({post.link})"
        _fail_if([_too_long("WeCom", "markdown", content, WECOM_MARKDOWN_MAX_BYTES)])
        return {"msgtype": "markdown", "markdown": {"content": content}}
    if not post.link:
        raise ActionFailed("A WeCom card needs a link: give one, or post text or markdown")
    return {
        "msgtype": "template_card",
        "template_card": {
            "card_type": "text_notice",
            "main_title": {"title": (post.title or post.text.splitlines()[0])[:26]},
            "sub_title_text": post.text,
            "jump_list": [{"type": 1, "url": post.link, "title": _label(locale)}],
            "card_action": {"type": 1, "url": post.link},
        },
    }


def dingtalk_payload(post: Post, locale: str) -> dict[str, Any]:
    """A DingTalk custom robot message: ``text``, ``markdown`` or an ``actionCard``."""
    at = {"isAtAll": post.mention_all}
    title = post.title or post.text.splitlines()[0][:64]
    if post.format == "text":
        content = f"{post.title}\n{post.text}" if post.title else post.text
        if post.link:
            content = f"{content}\n{post.link}"
        _fail_if([_too_long("DingTalk", "text", content, DINGTALK_MAX_BYTES)])
        return {"msgtype": "text", "text": {"content": content}, "at": at}
    text = f"### {post.title}\n\n{post.text}" if post.title else post.text
    if post.format == "markdown":
        if post.link:
            text = f"{text}\n\n[{_label(locale)}]({post.link})"
        _fail_if([_too_long("DingTalk", "markdown", text, DINGTALK_MAX_BYTES)])
        return {"msgtype": "markdown", "markdown": {"title": title, "text": text}, "at": at}
    if not post.link:
        raise ActionFailed("A DingTalk card needs a link: give one, or post text or markdown")
    _fail_if([_too_long("DingTalk", "card", text, DINGTALK_MAX_BYTES)])
    return {
        "msgtype": "actionCard",
        "actionCard": {"title": title, "text": text, "singleTitle": _label(locale), "singleURL": post.link},
        "at": at,
    }


def feishu_payload(post: Post, locale: str) -> dict[str, Any]:
    """A Feishu/Lark custom bot message: ``text``, or an ``interactive`` card (markdown and card)."""
    if post.format == "text":
        content = f"{post.title}\n{post.text}" if post.title else post.text
        if post.link:
            content = f"{content}\n{post.link}"
        if post.mention_all:
            content = f'{content}\n<at user_id="all"></at>'
        _fail_if([_too_long("Feishu/Lark", "text", content, FEISHU_MAX_BYTES)])
        return {"msg_type": "text", "content": {"text": content}}
    markdown = f"{post.text}\n<at id=all></at>" if post.mention_all else post.text
    elements: list[dict[str, Any]] = [{"tag": "markdown", "content": markdown}]
    if post.link:
        button = {"tag": "button", "text": {"tag": "plain_text", "content": _label(locale)}, "url": post.link}
        elements.append({"tag": "action", "actions": [{**button, "type": "primary"}]})
    card: dict[str, Any] = {"config": {"wide_screen_mode": True}, "elements": elements}
    if post.title:
        card["header"] = {"title": {"tag": "plain_text", "content": post.title}, "template": "blue"}
    _fail_if([_too_long("Feishu/Lark", "card", markdown, FEISHU_MAX_BYTES)])
    return {"msg_type": "interactive", "card": card}


def slack_payload(post: Post, locale: str) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (mrkdwn), or blocks for markdown and card."""
    mention = "<!channel> " if post.mention_all else ""
    fallback = f"{mention}{post.title}: {post.text}" if post.title else f"{mention}{post.text}"
    if post.format == "text":
        text = f"{fallback}\n{post.link}" if post.link else fallback
        _fail_if([_too_long("Slack", "text", text, 40_000, unit="characters")])
        return {"text": text}
    blocks: list[dict[str, Any]] = []
    problems = [_too_long("Slack", "a section", post.text, SLACK_SECTION_MAX_CHARS, unit="characters")]
    if post.title and post.format == "card":
        problems.append(_too_long("Slack", "a header", post.title, SLACK_HEADER_MAX_CHARS, unit="characters"))
        blocks.append({"type": "header", "text": {"type": "plain_text", "text": post.title}})
    section_text = f"*{post.title}*\n{post.text}" if post.title and post.format == "markdown" else post.text
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"{mention}{section_text}"}})
    if post.link:
        button = {"type": "button", "text": {"type": "plain_text", "text": _label(locale)}, "url": post.link}
        blocks.append({"type": "actions", "elements": [button]})
    _fail_if(problems)
    return {"text": fallback, "blocks": blocks}


PAYLOADS: dict[str, Callable[[Post, str], dict[str, Any]]] = {
    "wecom": wecom_payload,
    "dingtalk": dingtalk_payload,
    "feishu": feishu_payload,
    "slack": slack_payload,
}


# ---------------------------------------------------------------- answers


def retry_after_seconds(headers: Mapping[str, str], default: float = DEFAULT_RETRY_SECONDS) -> float:
    """The wait an HTTP ``Retry-After`` header asks for (seconds or an HTTP date), else ``default``."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _status_failure(vendor: str, response: HttpResponse, detail: str) -> ActionFailed | None:
    if response.status == 429:
        return ActionFailed(
            f"{vendor} is rate limiting this robot (HTTP 429{detail})",
            retryable=True,
            retry_after=retry_after_seconds(response.headers),
        )
    if response.status >= 500:
        return ActionFailed(
            f"{vendor} failed (HTTP {response.status}{detail}); trying again later",
            retryable=True,
            retry_after=retry_after_seconds(response.headers),
        )
    return None


def _body_preview(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    return text[:200] + ("…" if len(text) > 200 else "")


def check_answer(channel: str, response: HttpResponse) -> None:
    """Raise :class:`ActionFailed` unless ``response`` is the vendor's success."""
    vendor = VENDOR_NAMES[channel]
    if channel == "slack":
        _check_slack(response)
        return
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        failure = _status_failure(vendor, response, "")
        if failure:
            raise failure
        # The message may or may not have been posted: not retried, so it is never posted twice.
        raise ActionFailed(
            f"{vendor} answered HTTP {response.status} with something that is not its JSON answer "
            f"({_body_preview(response.body)!r}); the message may not have been posted"
        )
    code_key, message_key = ("code", "msg") if channel == "feishu" else ("errcode", "errmsg")
    if channel == "feishu" and code_key not in answer and "StatusCode" in answer:
        code_key, message_key = "StatusCode", "StatusMessage"
    code = answer.get(code_key)
    message = str(answer.get(message_key) or "")
    if code == 0 and 200 <= response.status < 300:
        return
    if not isinstance(code, int) or code == 0:
        failure = _status_failure(vendor, response, "")
        raise failure or ActionFailed(f"{vendor} answered HTTP {response.status}: {_body_preview(response.body)!r}")
    wait = RETRYABLE_CODES.get(channel, {}).get(code)
    if channel == "feishu" and code == FEISHU_BAD_REQUEST and not _says_too_many(message):
        wait = None  # 9499 is also Feishu's "Bad Request" for a message it cannot read: not worth retrying
    said = f"{vendor} error {code} ({message})" if message else f"{vendor} error {code}"
    if wait is not None:
        raise ActionFailed(
            f"{said}: the robot is sending too fast or {vendor} is busy", retryable=True, retry_after=wait
        )
    failure = _status_failure(vendor, response, f", {said}")
    if failure:
        raise failure
    known = {"wecom": WECOM_ERRORS, "dingtalk": DINGTALK_ERRORS, "feishu": FEISHU_ERRORS}[channel].get(code)
    raise ActionFailed(f"{said}: {known}" if known else f"{said}: the message was refused")


def _check_slack(response: HttpResponse) -> None:
    text = response.body.decode("utf-8", "replace").strip()
    if response.status == 200 and text == "ok":
        return
    code = text if re.fullmatch(r"[a-z_]{1,60}", text) else ""
    failure = _status_failure("Slack", response, f", {code}" if code else "")
    if failure:
        raise failure
    if response.status == 200:
        raise ActionFailed(f"Slack answered HTTP 200 with {_body_preview(response.body)!r} instead of ok")
    meaning = SLACK_ERRORS.get(code)
    said = f"Slack error {code} (HTTP {response.status})" if code else f"Slack answered HTTP {response.status}"
    raise ActionFailed(f"{said}: {meaning}" if meaning else f"{said}: {_body_preview(response.body)!r}")


# ---------------------------------------------------------------- posting


async def post_to_robot(context: PluginContext, robot: Robot, post: Post, *, now: float | None = None) -> None:
    """Post ``post`` to ``robot``, signed when it has a secret; raises :class:`ActionFailed`."""
    vendor = VENDOR_NAMES[robot.channel]
    payload = PAYLOADS[robot.channel](post, robot.locale)
    url = robot.webhook_url
    moment = time.time() if now is None else now
    if robot.secret and robot.channel == "dingtalk":
        timestamp_ms = round(moment * 1000)
        url = _with_query(url, {"timestamp": str(timestamp_ms), "sign": dingtalk_sign(robot.secret, timestamp_ms)})
    elif robot.secret and robot.channel == "feishu":
        timestamp_s = int(moment)
        payload = {"timestamp": str(timestamp_s), "sign": feishu_sign(robot.secret, timestamp_s), **payload}
    try:
        response = await context.http(
            "POST",
            url,
            json=payload,
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout_seconds=HTTP_TIMEOUT_SECONDS,
        )
    except ScopeDenied as exc:
        raise ActionFailed(f"{vendor} robot {robot.name!r} cannot be reached: {exc}") from exc
    except ActionFailed as exc:  # the host's network failure: keeps its retryability
        raise ActionFailed(
            f"{vendor} robot {robot.name!r}: {exc}", retryable=exc.retryable, retry_after=exc.retry_after
        ) from exc
    check_answer(robot.channel, response)
