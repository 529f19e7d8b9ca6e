"""``GUIJU_SMTP_URL`` and ``GUIJU_MAIL_FROM`` read into the messaging plugin's configuration."""

from __future__ import annotations

import pytest

from services.marketplace.host import smtp_settings


def test_each_scheme_gives_its_security_and_default_port() -> None:
    config, secrets = smtp_settings("smtp://mailer%40acme.cn:p%40ss%2Fw@smtp.exmail.qq.com", "规矩 <no-reply@acme.cn>")
    assert config == {
        "smtp_host": "smtp.exmail.qq.com",
        "smtp_port": 587,
        "smtp_security": "starttls",
        "smtp_from_address": "no-reply@acme.cn",
        "smtp_from_name": "规矩",
        "smtp_username": "mailer@acme.cn",
    }
    assert secrets == {"smtp_password": "p@ss/w"}
    tls, _ = smtp_settings("smtps://u:p@smtp.qiye.aliyun.com", "no-reply@acme.cn")
    assert (tls["smtp_security"], tls["smtp_port"], tls["smtp_from_name"]) == ("tls", 465, "Guiju")
    relay, relay_secrets = smtp_settings("smtp+plain://relay.internal:2525", "no-reply@acme.cn")
    assert (relay["smtp_security"], relay["smtp_port"], relay_secrets) == ("none", 2525, {})
    assert "smtp_username" not in relay


@pytest.mark.parametrize(
    ("url", "sender", "message"),
    [
        ("http://smtp.example.com", "a@example.com", "GUIJU_SMTP_URL must be"),
        ("smtp://", "a@example.com", "GUIJU_SMTP_URL must be"),
        ("smtp://smtp.example.com", "", "GUIJU_MAIL_FROM must be an address"),
        ("smtp://smtp.example.com", "Guiju", "GUIJU_MAIL_FROM must be an address"),
    ],
)
def test_a_setting_that_cannot_work_is_refused_with_its_name(url: str, sender: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        smtp_settings(url, sender)
