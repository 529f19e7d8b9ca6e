"""Posts to WeCom, DingTalk, Feishu/Lark and Slack robots, against local servers that check the
webhook, the signature and the payload as the vendors do and answer with the vendors' bodies."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from guiju_messaging import plugin, robots
from guiju_sdk import ActionFailed
from guiju_sdk.testing import FakeContext, PluginHarness
from messaging_support import (
    DINGTALK_SECRET,
    FEISHU_SECRET,
    FEISHU_TOKEN,
    Vendors,
    forward,
    robot_context,
)

harness = PluginHarness(plugin, name="messaging")


def _context(
    vendors: Vendors, channel: str, *, secret: str | None = None, locale: str = "zh-CN", **url: Any
) -> FakeContext:
    secrets = {"robot_1_webhook_url": vendors.url(channel, **url)}
    if secret is not None:
        secrets["robot_1_secret"] = secret
    return robot_context([{"name": "ops", "channel": channel, "locale": locale, "slot": 1}], secrets)


# ---------------------------------------------------------------- WeCom


async def test_wecom_text_markdown_and_card(vendors: Vendors) -> None:
    context = _context(vendors, "wecom")
    output = await harness.run_action("post_wecom", {"text": "仓库温度过高", "mention_all": True}, context)
    assert output == {"channel": "wecom", "robot": "ops", "locale": "zh-CN", "format": "text"}
    await harness.run_action("post_wecom", {"format": "markdown", "title": "日报", "text": "**出货** 12 单"}, context)
    await harness.run_action(
        "post_wecom",
        {"format": "card", "title": "审批", "text": "采购单待审批", "link": "https://guiju.test/r/1"},
        context,
    )
    text, markdown, card = (r["json"] for r in vendors.received["wecom"])
    assert text == {"msgtype": "text", "text": {"content": "仓库温度过高", "mentioned_list": ["@all"]}}
    assert markdown == {"msgtype": "markdown", "markdown": {"content": "### 日报\n**出货** 12 单"}}
    assert card["template_card"]["card_action"] == {"type": 1, "url": "https://guiju.test/r/1"}
    assert card["template_card"]["main_title"] == {"title": "审批"}


async def test_wecom_wrong_key_is_permanent(vendors: Vendors) -> None:
    with pytest.raises(ActionFailed) as failed:
        await harness.run_action("post_wecom", {"text": "hi"}, _context(vendors, "wecom", token="not-the-key"))
    assert failed.value.retryable is False
    assert str(failed.value) == (
        "WeCom error 93000 (invalid webhook url, hint: [1700000000_1_abcd]): "
        "the webhook URL is invalid: the robot was removed or its key is wrong"
    )


async def test_wecom_frequency_limit_is_retryable(vendors: Vendors) -> None:
    vendors.force("wecom", 200, {"errcode": 45009, "errmsg": "api freq out of limit"})
    with pytest.raises(ActionFailed, match="WeCom error 45009") as failed:
        await harness.run_action("post_wecom", {"text": "hi"}, _context(vendors, "wecom"))
    assert failed.value.retryable is True
    assert failed.value.retry_after == robots.WECOM_RATE_LIMIT_SECONDS


async def test_wecom_too_long_fails_before_posting(vendors: Vendors) -> None:
    with pytest.raises(ActionFailed, match="WeCom accepts at most 2048 bytes of text; this one has 3000"):
        await harness.run_action("post_wecom", {"text": "字" * 1000}, _context(vendors, "wecom"))
    assert vendors.received["wecom"] == []


async def test_a_malformed_answer_is_a_clear_failure(vendors: Vendors) -> None:
    vendors.force("wecom", 200, "<html>upstream gateway</html>")
    with pytest.raises(ActionFailed) as failed:
        await harness.run_action("post_wecom", {"text": "hi"}, _context(vendors, "wecom"))
    assert failed.value.retryable is False
    assert (
        "WeCom answered HTTP 200 with something that is not its JSON answer ('<html>upstream gateway</html>')"
        in str(failed.value)
    )
    vendors.force("wecom", 502, "<html>Bad Gateway</html>")
    with pytest.raises(ActionFailed, match=r"WeCom failed \(HTTP 502\)") as bad_gateway:
        await harness.run_action("post_wecom", {"text": "hi"}, _context(vendors, "wecom"))
    assert bad_gateway.value.retryable is True


# ---------------------------------------------------------------- DingTalk


async def test_dingtalk_signed_post(vendors: Vendors) -> None:
    context = _context(vendors, "dingtalk", secret=DINGTALK_SECRET)
    await harness.run_action(
        "post_dingtalk", {"format": "markdown", "title": "日报", "text": "出货 **12** 单", "mention_all": True}, context
    )
    [received] = vendors.received["dingtalk"]
    assert received["json"] == {
        "msgtype": "markdown",
        "markdown": {"title": "日报", "text": "### 日报\n\n出货 **12** 单"},
        "at": {"isAtAll": True},
    }
    assert abs(int(received["query"]["timestamp"]) - time.time() * 1000) < 60_000


async def test_dingtalk_card_has_a_button(vendors: Vendors) -> None:
    context = _context(vendors, "dingtalk", secret=DINGTALK_SECRET, locale="en")
    await harness.run_action(
        "post_dingtalk", {"format": "card", "text": "PO-9 awaits approval", "link": "https://guiju.test/po/9"}, context
    )
    card = vendors.received["dingtalk"][0]["json"]["actionCard"]
    assert card == {
        "title": "PO-9 awaits approval",
        "text": "PO-9 awaits approval",
        "singleTitle": "View details",
        "singleURL": "https://guiju.test/po/9",
    }


async def test_dingtalk_wrong_secret_is_permanent(vendors: Vendors) -> None:
    with pytest.raises(ActionFailed) as failed:
        await harness.run_action("post_dingtalk", {"text": "hi"}, _context(vendors, "dingtalk", secret="SECwrong"))
    assert failed.value.retryable is False
    assert str(failed.value).startswith("DingTalk error 310000 (sign not match")
    assert "加签 secret" in str(failed.value)


async def test_dingtalk_rejects_a_timestamp_older_than_an_hour(vendors: Vendors) -> None:
    context = _context(vendors, "dingtalk", secret=DINGTALK_SECRET)
    robot = robots.find_robot(context, "dingtalk", None)
    with pytest.raises(ActionFailed, match="DingTalk error 310000 \\(invalid timestamp\\)"):
        await robots.post_to_robot(context, robot, robots.Post("text", "hi"), now=time.time() - 2 * 3600)


async def test_dingtalk_rate_limit_is_retryable(vendors: Vendors) -> None:
    vendors.force("dingtalk", 200, {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"})
    with pytest.raises(ActionFailed, match="DingTalk error 130101") as failed:
        await harness.run_action("post_dingtalk", {"text": "hi"}, _context(vendors, "dingtalk", secret=DINGTALK_SECRET))
    assert failed.value.retryable is True
    assert failed.value.retry_after == robots.DINGTALK_RATE_LIMIT_SECONDS


async def test_dingtalk_removed_robot_is_permanent(vendors: Vendors) -> None:
    with pytest.raises(ActionFailed, match="DingTalk error 300001 \\(token is not exist\\)") as failed:
        await harness.run_action(
            "post_dingtalk", {"text": "hi"}, _context(vendors, "dingtalk", secret=DINGTALK_SECRET, token="gone")
        )
    assert failed.value.retryable is False


# ---------------------------------------------------------------- Feishu / Lark


async def test_feishu_signed_card(vendors: Vendors) -> None:
    context = _context(vendors, "feishu", secret=FEISHU_SECRET)
    output = await harness.run_action(
        "post_feishu",
        {"format": "card", "title": "出货提醒", "text": "SO-1001 已出库", "link": "https://guiju.test/so/1001"},
        context,
    )
    assert output["format"] == "card"
    [received] = vendors.received["feishu"]
    body = received["json"]
    assert body["msg_type"] == "interactive"
    assert body["card"]["header"]["title"] == {"tag": "plain_text", "content": "出货提醒"}
    assert body["card"]["elements"][0] == {"tag": "markdown", "content": "SO-1001 已出库"}
    assert body["card"]["elements"][1]["actions"][0]["url"] == "https://guiju.test/so/1001"
    assert body["card"]["elements"][1]["actions"][0]["text"]["content"] == "查看详情"
    assert robots.feishu_sign(FEISHU_SECRET, int(body["timestamp"])) == body["sign"]


async def test_feishu_text_mentions_everyone(vendors: Vendors) -> None:
    await harness.run_action(
        "post_feishu", {"text": "hi", "mention_all": True}, _context(vendors, "feishu", secret=FEISHU_SECRET)
    )
    assert vendors.received["feishu"][0]["json"]["content"] == {"text": 'hi\n<at user_id="all"></at>'}


async def test_feishu_wrong_secret_is_permanent(vendors: Vendors) -> None:
    with pytest.raises(ActionFailed) as failed:
        await harness.run_action("post_feishu", {"text": "hi"}, _context(vendors, "feishu", secret="not-the-secret"))
    assert failed.value.retryable is False
    assert "Feishu/Lark error 19021 (sign match fail" in str(failed.value)
    assert "签名校验 secret" in str(failed.value)


async def test_feishu_rate_limit_and_keyword(vendors: Vendors) -> None:
    context = _context(vendors, "feishu", secret=FEISHU_SECRET)
    vendors.force(
        "feishu", 200, {"code": 11232, "data": {}, "msg": "frequency limited psm[lark.oapi.app_platform_runtime]"}
    )
    with pytest.raises(ActionFailed, match="Feishu/Lark error 11232") as limited:
        await harness.run_action("post_feishu", {"text": "hi"}, context)
    assert (limited.value.retryable, limited.value.retry_after) == (True, robots.FEISHU_RATE_LIMIT_SECONDS)
    vendors.force("feishu", 200, {"code": 19024, "data": {}, "msg": "Key Words Not Found"})
    with pytest.raises(ActionFailed, match="lacks the keyword") as keyword:
        await harness.run_action("post_feishu", {"text": "hi"}, context)
    assert keyword.value.retryable is False


async def test_feishu_9499_is_a_rate_limit_only_when_it_says_so(vendors: Vendors) -> None:
    context = _context(vendors, "feishu", secret=FEISHU_SECRET)
    vendors.force("feishu", 200, {"code": 9499, "data": {}, "msg": "too many request"})
    with pytest.raises(ActionFailed, match="Feishu/Lark error 9499") as limited:
        await harness.run_action("post_feishu", {"text": "hi"}, context)
    assert limited.value.retryable is True
    vendors.force("feishu", 400, {"code": 9499, "data": {}, "msg": "Bad Request"})
    with pytest.raises(ActionFailed, match=re.escape("could not read the message (Bad Request)")) as bad:
        await harness.run_action("post_feishu", {"text": "hi"}, context)
    assert bad.value.retryable is False


async def test_feishu_invalid_token(vendors: Vendors) -> None:
    context = _context(vendors, "feishu", secret=FEISHU_SECRET, token="00000000-dead-beef-0000-000000000000")
    with pytest.raises(ActionFailed, match="Feishu/Lark error 19001") as failed:
        await harness.run_action("post_feishu", {"text": "hi"}, context)
    assert failed.value.retryable is False


# ---------------------------------------------------------------- Slack


async def test_slack_text_and_card(vendors: Vendors) -> None:
    context = _context(vendors, "slack", locale="en")
    await harness.run_action("post_slack", {"text": "Deploy done", "mention_all": True}, context)
    await harness.run_action(
        "post_slack",
        {"format": "card", "title": "Approval", "text": "PO-9 awaits you", "link": "https://guiju.test/po/9"},
        context,
    )
    text, card = (r["json"] for r in vendors.received["slack"])
    assert text == {"text": "<!channel> Deploy done"}
    assert card["blocks"] == [
        {"type": "header", "text": {"type": "plain_text", "text": "Approval"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "PO-9 awaits you"}},
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "View details"},
                    "url": "https://guiju.test/po/9",
                }
            ],
        },
    ]
    assert card["text"] == "Approval: PO-9 awaits you"


async def test_slack_errors(vendors: Vendors) -> None:
    context = _context(vendors, "slack")
    vendors.force("slack", 429, "rate_limited", {"Retry-After": "30"})
    with pytest.raises(ActionFailed, match="HTTP 429") as limited:
        await harness.run_action("post_slack", {"text": "hi"}, context)
    assert (limited.value.retryable, limited.value.retry_after) == (True, 30.0)
    vendors.force("slack", 500, "rollup_error")
    with pytest.raises(ActionFailed, match="HTTP 500, rollup_error") as server_error:
        await harness.run_action("post_slack", {"text": "hi"}, context)
    assert server_error.value.retryable is True
    vendors.force("slack", 410, "channel_is_archived")
    with pytest.raises(ActionFailed) as archived:
        await harness.run_action("post_slack", {"text": "hi"}, context)
    assert str(archived.value) == "Slack error channel_is_archived (HTTP 410): the channel is archived"
    assert archived.value.retryable is False


async def test_slack_unknown_webhook(vendors: Vendors) -> None:
    context = _context(vendors, "slack", token="/services/T1/B1/revoked")
    with pytest.raises(ActionFailed, match="Slack error no_service \\(HTTP 404\\)") as failed:
        await harness.run_action("post_slack", {"text": "hi"}, context)
    assert failed.value.retryable is False


# ---------------------------------------------------------------- templates, configuration


async def test_templates_render_in_the_robot_language(vendors: Vendors) -> None:
    context = _context(vendors, "slack", locale="en")
    template = {
        "zh-CN": {"title": "订单 {{ record.code }}", "text": "客户 {{ record.customer }}"},
        "en": {"title": "Order {{ record.code }}", "text": "Customer {{ record.customer }}"},
    }
    output = await harness.run_action(
        "post_slack",
        {
            "format": "markdown",
            "template": template,
            "variables": {"record": {"code": "SO-1", "customer": "<!channel> & co"}},
        },
        context,
    )
    assert output["locale"] == "en"
    section = vendors.received["slack"][0]["json"]["blocks"][0]["text"]["text"]
    assert section == "*Order SO-1*\nCustomer &lt;!channel&gt; &amp; co"  # a value cannot mention the channel

    with pytest.raises(ActionFailed, match=re.escape("template en.text: missing variable(s) record")):
        await harness.run_action("post_slack", {"template": template, "variables": {}}, context)
    with pytest.raises(ActionFailed, match="its text is empty"):
        await harness.run_action(
            "post_slack", {"template": {"en": {"text": "{{ note }}"}}, "variables": {"note": " "}}, context
        )
    assert len(vendors.received["slack"]) == 1


async def test_named_robots_and_missing_configuration(vendors: Vendors) -> None:
    context = robot_context(
        [
            {"name": "sales", "channel": "wecom", "slot": 1},
            {"name": "ops", "channel": "wecom", "slot": 2, "locale": "en"},
        ],
        {"robot_1_webhook_url": vendors.url("wecom"), "robot_2_webhook_url": vendors.url("wecom")},
    )
    assert (await harness.run_action("post_wecom", {"text": "hi"}, context))["robot"] == "sales"
    named = await harness.run_action("post_wecom", {"robot": "ops", "text": "hi"}, context)
    assert (named["robot"], named["locale"]) == ("ops", "en")
    with pytest.raises(ActionFailed, match="There is no WeCom robot named 'nobody': add it under Robots"):
        await harness.run_action("post_wecom", {"robot": "nobody", "text": "hi"}, context)
    with pytest.raises(ActionFailed, match="There is no DingTalk robot: add it"):
        await harness.run_action("post_dingtalk", {"text": "hi"}, context)


def test_webhook_url_shapes() -> None:
    assert robots.webhook_url_problems("wecom", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc") == []
    assert robots.webhook_url_problems("dingtalk", "https://oapi.dingtalk.com/robot/send?access_token=abc") == []
    assert (
        robots.webhook_url_problems("feishu", f"https://open.larksuite.com/open-apis/bot/v2/hook/{FEISHU_TOKEN}") == []
    )
    assert robots.webhook_url_problems("slack", "https://hooks.slack.com/services/T0/B0/abc") == []
    assert robots.webhook_url_problems("wecom", "http://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc") == [
        "the WeCom webhook URL must start with https://"
    ]
    assert robots.webhook_url_problems("dingtalk", "https://evil.example/robot/send?access_token=abc") == [
        "the DingTalk webhook URL must be on oapi.dingtalk.com, not 'evil.example'"
    ]
    assert robots.webhook_url_problems("wecom", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send") == [
        "a WeCom webhook URL looks like https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…"
    ]
    assert len(robots.webhook_url_problems("slack", "https://hooks.slack.com/services/T0")) == 1


async def test_a_bad_webhook_url_fails_without_posting(vendors: Vendors) -> None:
    context = robot_context(
        [{"name": "ops", "channel": "dingtalk", "slot": 3}],
        {"robot_3_webhook_url": "https://oapi.dingtalk.com/robot/send"},
    )
    with pytest.raises(ActionFailed) as failed:
        await harness.run_action("post_dingtalk", {"text": "hi"}, context)
    assert str(failed.value) == (
        "DingTalk robot 'ops': a DingTalk webhook URL looks like https://oapi.dingtalk.com/robot/send?access_token=…"
    )
    assert failed.value.retryable is False
    assert context.requests == []


async def test_an_undeclared_host_is_refused_for_good(vendors: Vendors) -> None:
    context = _context(vendors, "wecom")
    refusing = FakeContext(
        plugin="messaging", config=context.config, secrets=context.secrets, hosts=set(), http_handler=forward
    )
    with pytest.raises(ActionFailed, match="cannot be reached") as failed:
        await harness.run_action("post_wecom", {"text": "hi"}, refusing)
    assert failed.value.retryable is False


def test_signatures_match_the_vendors_published_examples() -> None:
    """The algorithms as the vendors' documents give them (Python examples in their guides)."""
    import base64
    import hashlib
    import hmac

    secret, timestamp_ms = "this is secret", 1577262236757
    expected = base64.b64encode(
        hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), digestmod=hashlib.sha256).digest()
    ).decode()
    assert robots.dingtalk_sign(secret, timestamp_ms) == expected
    string_to_sign = f"{1599360473}\n{secret}"
    assert (
        robots.feishu_sign(secret, 1599360473)
        == base64.b64encode(hmac.new(string_to_sign.encode(), digestmod=hashlib.sha256).digest()).decode()
    )
