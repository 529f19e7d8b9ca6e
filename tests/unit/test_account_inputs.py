"""The accounts service's input rules on their own: names, e-mail addresses, password strength."""

from __future__ import annotations

import pytest
from zxcvbn.matching import L33T_TABLE, enumerate_l33t_subs, relevant_l33t_subtable

from services.accounts.emails import normalize_email
from services.accounts.passwords import (
    _WORK_BUDGET,
    MIN_PASSWORD_LENGTH,
    _scored_part,
    password_problems,
    personal_words,
    strength,
)
from services.names import clean_name, hidden_characters, name_problems


@pytest.mark.parametrize(
    "name",
    [
        "李伟",
        "Zoë O'Brien-Smith",
        "株式会社 東京",
        "👩\u200d💻 Mei",  # ZWJ inside an emoji sequence
        "👨\u200d👩\u200d👧 Family Tea",
        "❤\ufe0f\u200d🔥 Studio",  # ZWJ after a variation selector
        "نرگس\u200cخانم",  # ZWNJ between Persian letters
        "🏴\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f Wales Ltd",
    ],
)
def test_real_names_pass(name: str) -> None:
    assert hidden_characters(name) == []
    assert name_problems(name, "/name") == []


@pytest.mark.parametrize(
    "name",
    [
        "a\u202eb",
        "a\u2066b",
        "a\u200fb",
        "a\u061cb",
        "a\x00b",
        "a\x7fb",
        "a\x85b",
        "a\u200bb",
        "a\u2060b",
        "a\u00adb",
        "a\u200db",  # ZWJ between letters joins nothing visible
        "\u200d👩",  # ZWJ at the start
        "a\u200c",  # ZWNJ at the end
        "a\U000e0067b",  # a tag character without the flag
        "a\ue000b",
        "a\ufdd0b",
        "a\U0010fffeb",
        "a\u2029b",
    ],
)
def test_hidden_characters_are_found(name: str) -> None:
    assert hidden_characters(name), repr(name)
    assert [p.code for p in name_problems(name, "/name")] == ["invalid_characters"]


def test_names_are_stored_nfc_and_trimmed() -> None:
    assert clean_name("\u3000 Jose\u0301\t\n") == "José"
    assert [p.code for p in name_problems(" \u3000 ", "/name")] == ["required"]
    assert name_problems("", "/legal_name", required=False) == []


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("Mei@Example.COM", "mei@example.com"),
        ("mei@例子.中国", "mei@例子.中国"),
        ("mei@xn--fsqu00a.xn--fiqs8s", "mei@例子.中国"),
    ],
)
def test_addresses_are_normalised(raw: str, stored: str) -> None:
    assert normalize_email(raw) == (stored, None)


@pytest.mark.parametrize(
    "raw",
    [
        "ｍｅｉ＠ｅｘａｍｐｌｅ．ｃｏｍ",
        "ｍei@example.com",
        "mei@ｅｘample.com",
        "mei@example．com",
        "mei@例子。中国",
        "mei@ex\uff61com",
    ],
)
def test_full_width_addresses_are_refused_not_folded(raw: str) -> None:
    stored, problem = normalize_email(raw)
    assert stored is None and problem is not None and problem.code == "invalid_email"


def test_zxcvbn_knows_the_persons_details() -> None:
    details = personal_words("zhou@example.com", "Zhou Meilan", "Xiamen Oolong Trading")
    assert {"zhou", "meilan", "xiamen", "oolong", "trading"} <= set(details)
    assert strength("Oolongtrading")[0] >= 3
    assert strength("Oolongtrading", details)[0] < 3


def test_password_problems_list_everything_in_the_language_asked() -> None:
    found = password_problems("abc", locale="en", min_score=3)
    assert [p.code for p in found] == ["password_too_short", "password_too_weak"]
    assert found[1].message.startswith('Sequences like "abc" or "6543" are easy to guess.')
    assert [p.code for p in password_problems("x" * 129, locale="en", min_score=3)] == ["password_too_long"]
    assert password_problems("Tea-leaf-2026", locale="zh-CN", min_score=3) == []
    assert password_problems("Tea-leaf-2026", locale="zh-CN", min_score=4) == []
    details = personal_words("meilan@example.com", "Li Wei", "Xiamen Oolong")
    assert strength("XiamenOolong2024", details)[0] == 3
    weak_for_four = password_problems("XiamenOolong2024", locale="zh-CN", min_score=4, user_inputs=details)
    assert [p.code for p in weak_for_four] == ["password_too_weak"]
    assert weak_for_four[0].message  # zxcvbn gives no advice above score 2: ours stands in


@pytest.mark.parametrize(
    "hostile",
    [
        ("4@8(3<[{6#9!1|2$5%7+" * 7)[:128],
        ("!@#$%^&*()1|7+0" * 9)[:128],
        "a" * 128,
        ("1qaz2wsx" * 16)[:128],
    ],
)
def test_scoring_is_bounded_on_hostile_passwords(hostile: str) -> None:
    # zxcvbn's work grows with the square of the length times the l33t readings; only a prefix
    # within the budget is scored, so a hostile password costs no more than an ordinary one.
    readings = max(1, len(enumerate_l33t_subs(relevant_l33t_subtable(hostile, L33T_TABLE))))
    scored = len(_scored_part(hostile))
    assert scored == MIN_PASSWORD_LENGTH or scored**2 * readings <= _WORK_BUDGET
    assert scored < len(hostile) or len(hostile) ** 2 * readings <= _WORK_BUDGET
    assert 0 <= strength(hostile, ["someone@example.com"])[0] <= 4
