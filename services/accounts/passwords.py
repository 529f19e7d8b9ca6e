"""Password rules: 10 to 128 characters, and hard to guess by zxcvbn's estimate.

zxcvbn scores a password from 0 (guessed at once) to 4 (very hard), knowing common passwords,
names, words, keyboard patterns, dates and the person's own details (e-mail, name, company); a new
password needs ``GUIJU_PASSWORD_MIN_SCORE`` (3 by default). Its advice is English only: every text
it can give is listed below and translated in the catalogs of ``services/web``.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable

from zxcvbn import zxcvbn
from zxcvbn.matching import L33T_TABLE, enumerate_l33t_subs, relevant_l33t_subtable

from services.web.i18n import N_, join_sentences, translate
from tenants.errors import FieldProblem

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 128

# zxcvbn matches every l33t reading of a password against its dictionaries: the work grows with
# the number of readings times the square of the length, and a password dense in symbols that read
# as letters ("4@8(3<[{6#9!1|2$5%7+" repeated) takes seconds at 128 characters. Only as long a
# beginning is scored as keeps that work within this budget (some 0.1 s); a strong beginning makes
# the whole password strong.
_WORK_BUDGET = 150_000
# zxcvbn keeps the person's details in a module-level dictionary while it scores.
_zxcvbn_lock = threading.Lock()

TOO_WEAK = N_("This password is too easy to guess.")
# Every warning and suggestion zxcvbn gives (its feedback module), for the catalogs.
ZXCVBN_FEEDBACK = (
    N_("Use a few words, avoid common phrases."),
    N_("No need for symbols, digits, or uppercase letters."),
    N_("Add another word or two. Uncommon words are better."),
    N_("Straight rows of keys are easy to guess."),
    N_("Short keyboard patterns are easy to guess."),
    N_("Use a longer keyboard pattern with more turns."),
    N_('Repeats like "aaa" are easy to guess.'),
    N_('Repeats like "abcabcabc" are only slightly harder to guess than "abc".'),
    N_("Avoid repeated words and characters."),
    N_('Sequences like "abc" or "6543" are easy to guess.'),
    N_("Avoid sequences."),
    N_("Recent years are easy to guess."),
    N_("Avoid recent years."),
    N_("Avoid years that are associated with you."),
    N_("Dates are often easy to guess."),
    N_("Avoid dates and years that are associated with you."),
    N_("This is a top-10 common password."),
    N_("This is a top-100 common password."),
    N_("This is a very common password."),
    N_("This is similar to a commonly used password."),
    N_("A word by itself is easy to guess."),
    N_("Names and surnames by themselves are easy to guess."),
    N_("Common names and surnames are easy to guess."),
    N_("Capitalization doesn't help very much."),
    N_("All-uppercase is almost as easy to guess as all-lowercase."),
    N_("Reversed words aren't much harder to guess."),
    N_("Predictable substitutions like '@' instead of 'a' don't help very much."),
)
MORE_WORDS = ZXCVBN_FEEDBACK[2]


def personal_words(*details: str | None) -> list[str]:
    """What zxcvbn should know about the person: each detail whole and its words (an e-mail's name
    and domain parts too), so that a password built on them scores low."""
    words: set[str] = set()
    for detail in details:
        if not detail:
            continue
        words.add(detail.lower())
        words.update(part for part in re.split(r"[\W_]+", detail.lower()) if len(part) >= 3)
    return sorted(words)


def _scored_part(password: str) -> str:
    readings = len(enumerate_l33t_subs(relevant_l33t_subtable(password, L33T_TABLE)))
    return password[: max(MIN_PASSWORD_LENGTH, math.isqrt(_WORK_BUDGET // max(1, readings)))]


def strength(password: str, user_inputs: Iterable[str] = ()) -> tuple[int, str, list[str]]:
    """zxcvbn's score (0-4), warning and suggestions for ``password`` (at most 128 characters)."""
    with _zxcvbn_lock:
        result = zxcvbn(_scored_part(password), user_inputs=list(user_inputs), max_length=MAX_PASSWORD_LENGTH)
    feedback = result["feedback"]
    return int(result["score"]), str(feedback["warning"] or ""), [str(s) for s in feedback["suggestions"]]


def password_problems(
    password: str,
    *,
    locale: str,
    min_score: int,
    user_inputs: Iterable[str] = (),
    pointer: str = "/password",
) -> list[FieldProblem]:
    """Every problem of a new password, with messages in ``locale``."""
    if len(password) > MAX_PASSWORD_LENGTH:
        message = translate("Use at most {count} characters.", locale, count=MAX_PASSWORD_LENGTH)
        return [FieldProblem.said(pointer, "password_too_long", message)]
    problems = []
    if len(password) < MIN_PASSWORD_LENGTH:
        message = translate("Use at least {count} characters.", locale, count=MIN_PASSWORD_LENGTH)
        problems.append(FieldProblem.said(pointer, "password_too_short", message))
    score, warning, suggestions = strength(password, user_inputs)
    if score < min_score:
        advice = [warning or TOO_WEAK, *(suggestions or [MORE_WORDS])]
        message = join_sentences([translate(text, locale) for text in advice], locale)
        problems.append(FieldProblem.said(pointer, "password_too_weak", message))
    return problems
