"""API errors in the reader's language: the same error, with the same code, worded in English or
Chinese by the signed-in person's own setting, else the request's Accept-Language, else the
platform's default."""

from __future__ import annotations

from typing import Any

from tests.conftest import World, signup_body, unique_email

ORDERS = {"key": "orders", "name": "Orders", "fields": [{"key": "customer", "label": "Customer", "type": "text"}]}


def _words(response: Any) -> tuple[str, str, str, str]:
    body = response.json()
    return body["code"], body["title"], body.get("detail", ""), response.headers["content-language"]


async def test_an_anonymous_callers_error_follows_accept_language(world: World) -> None:
    api = await world.client()
    wrong = {"email": unique_email(), "password": "Not-the-right-one-1"}
    en = await api.post("/api/v1/auth/login", wrong, headers={"Accept-Language": "en-GB,en;q=0.9"})
    zh = await api.post("/api/v1/auth/login", wrong, headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})
    assert en.status_code == zh.status_code == 401
    assert _words(en) == ("invalid_credentials", "Sign in first", "The email or password is wrong.", "en")
    assert _words(zh) == ("invalid_credentials", "请先登录", "邮箱或密码不正确。", "zh-CN")
    # No language asked for and nobody signed in: the platform's default, Chinese.
    default = await api.post("/api/v1/auth/login", wrong, headers={"Accept-Language": ""})
    assert _words(default) == _words(zh)


async def test_field_problems_are_worded_too_with_their_values(world: World) -> None:
    api = await world.client()
    body = signup_body(locale="fr")
    en = await api.post("/api/v1/auth/signup", body, headers={"Accept-Language": "en"})
    zh = await api.post("/api/v1/auth/signup", body, headers={"Accept-Language": "zh-CN"})
    assert en.status_code == zh.status_code == 422
    assert en.json()["errors"] == [
        {"pointer": "/locale", "code": "unknown_locale", "message": "use one of ['zh-CN', 'en']"}
    ]
    assert zh.json()["errors"] == [
        {"pointer": "/locale", "code": "unknown_locale", "message": "请使用 ['zh-CN', 'en'] 之一"}
    ]
    assert (en.json()["title"], zh.json()["title"]) == ("The input is not valid", "输入有误")


async def test_a_signed_in_persons_own_language_comes_first(world: World) -> None:
    api, _ = await world.signup(locale="en")
    assert (await api.post("/api/v1/collections", ORDERS)).status_code == 201

    async def taken(language: str) -> Any:
        response = await api.post("/api/v1/collections", ORDERS, headers={"Accept-Language": language})
        assert response.status_code == 409
        return response

    # Their setting (English) wins over the browser's Chinese.
    assert _words(await taken("zh-CN")) == (
        "collection_key_taken",
        "Conflict",
        "A collection with the key 'orders' exists.",
        "en",
    )
    changed = await api.patch("/api/v1/auth/profile", {"locale": "zh-CN"})
    assert changed.status_code == 200, changed.text
    # Now Chinese, whatever the header says; the code is the same.
    assert _words(await taken("en")) == ("collection_key_taken", "冲突", "已有标识为「orders」的数据表。", "zh-CN")
