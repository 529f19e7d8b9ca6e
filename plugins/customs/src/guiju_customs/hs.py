"""The Harmonized System 2022 headings shipped with the plugin, and the checks of an HS code."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

#: The data file: one line per four-digit heading (heading, English, Chinese), tab-separated.
HEADINGS_FILE = "hs2022_headings.tsv"
#: China's 商品编号 is ten digits; other countries' tariff lines are six to ten.
CHINA_CODE_LENGTH = 10
SUBHEADING_LENGTH = 6
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Heading:
    """A four-digit HS heading with its short descriptions."""

    code: str
    description_en: str
    description_zh: str


@cache
def headings() -> dict[str, Heading]:
    """Every HS 2022 heading by its four digits, read once from the shipped data file."""
    text = resources.files("guiju_customs").joinpath("data", HEADINGS_FILE).read_text(encoding="utf-8")
    found: dict[str, Heading] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        code, english, chinese = line.split("\t")
        found[code] = Heading(code, english, chinese)
    return found


def heading(code: str) -> Heading | None:
    """The heading of an HS code (its first four digits), or ``None`` when HS 2022 has no such heading."""
    return headings().get(code[:4])


def hs_code_problem(code: str, *, china: bool) -> str | None:
    """What is wrong with ``code`` as an HS code; ``None`` when nothing is.

    Digits only; ten digits when ``china`` (the 商品编号 of a Chinese declaration), otherwise at least
    the six digits of the HS subheading (and at most ten); its four-digit heading must exist in HS 2022.
    """
    if not _DIGITS.fullmatch(code):
        return f"{code!r} is not an HS code: digits only, without dots or spaces"
    if china and len(code) != CHINA_CODE_LENGTH:
        return f"{code!r} has {len(code)} digits; China's 商品编号 has {CHINA_CODE_LENGTH}"
    if not SUBHEADING_LENGTH <= len(code) <= CHINA_CODE_LENGTH:
        return f"{code!r} has {len(code)} digits; an HS code has {SUBHEADING_LENGTH} to {CHINA_CODE_LENGTH}"
    if heading(code) is None:
        return f"{code!r}: HS 2022 has no heading {code[:4]}"
    return None
