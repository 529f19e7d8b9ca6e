"""Names people type: of a person, a workspace, a legal entity, a collection, a procedure, an automation…

A name is stored NFC-normalised with its surrounding white space removed, and refused when it holds
characters that are not shown but change what is shown or how it is read:

- control characters (C0, DEL, C1) and line or paragraph separators;
- bidirectional controls (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C), which can make
  a name display as something else ("Trojan Source");
- other invisible format characters (Unicode category Cf: zero-width space, word joiner, byte-order
  mark, soft hyphen …), private-use characters, surrogates and non-characters.

Two format characters are part of how real names are written and stay allowed where they do that
work: the zero-width joiner between two emoji (👩‍💻, 👨‍👩‍👧), and the zero-width non-joiner between
two letters (Persian and Indic names need it). Emoji tag sequences (the flags of 🏴󠁧󠁢󠁳󠁣󠁴󠁿 Scotland,
Wales, England) are allowed after the black flag that starts them.
"""

from __future__ import annotations

import unicodedata

from tenants.errors import FieldProblem

ZWNJ, ZWJ = "\u200c", "\u200d"
BLACK_FLAG = "\U0001f3f4"
TAG_RANGE = range(0xE0020, 0xE0080)
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
_EMOJI_CATEGORIES = frozenset({"So", "Sk"})
_VARIATION_SELECTOR_16 = "\ufe0f"


def _is_emoji_side(char: str) -> bool:
    return unicodedata.category(char) in _EMOJI_CATEGORIES or char == _VARIATION_SELECTOR_16


def _is_letter(char: str) -> bool:
    return unicodedata.category(char)[0] in "LM"


def _noncharacter(code: int) -> bool:
    return 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE


def _allowed_format(text: str, index: int) -> bool:
    """Whether the format character at ``index`` does the work a real name needs it for."""
    char = text[index]
    before = text[index - 1] if index > 0 else ""
    after = text[index + 1] if index + 1 < len(text) else ""
    if char == ZWJ:
        return bool(before and after) and _is_emoji_side(before) and _is_emoji_side(after)
    if char == ZWNJ:
        return bool(before and after) and _is_letter(before) and _is_letter(after)
    if ord(char) in TAG_RANGE:
        start = index
        while start > 0 and ord(text[start - 1]) in TAG_RANGE:
            start -= 1
        return start > 0 and text[start - 1] == BLACK_FLAG
    return False


def hidden_characters(text: str) -> list[str]:
    """The characters of ``text`` a name may not hold (each once, in order)."""
    found: list[str] = []
    for index, char in enumerate(text):
        category = unicodedata.category(char)
        refused = (
            category in {"Cc", "Co", "Cs", "Zl", "Zp"}
            or char in BIDI_CONTROLS
            or (category == "Cf" and not _allowed_format(text, index))
            or _noncharacter(ord(char))
        )
        if refused and char not in found:
            found.append(char)
    return found


def clean_name(raw: str) -> str:
    """The name as stored: NFC, without surrounding white space."""
    return unicodedata.normalize("NFC", raw).strip()


def without_hidden_characters(raw: str) -> str:
    """A name made from data rather than typed (a run title an automation renders from a record):
    the same name with the characters :func:`hidden_characters` finds removed, NFC, trimmed."""
    name = clean_name(raw)
    hidden = set(hidden_characters(name))
    return "".join(c for c in name if c not in hidden).strip() if hidden else name


def name_problems(raw: str, pointer: str, *, required: bool = True) -> list[FieldProblem]:
    """Every problem of a typed name (empty, or holding hidden characters)."""
    name = clean_name(raw)
    problems = []
    if required and not name:
        problems.append(FieldProblem(pointer=pointer, code="required", message="this field cannot be empty"))
    hidden = hidden_characters(name)
    if hidden:
        shown = ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, 'unnamed')}" for c in hidden[:5])
        problems.append(
            FieldProblem.of(
                pointer=pointer,
                code="invalid_characters",
                message="remove the invisible or control characters: {shown}",
                shown=shown,
            )
        )
    return problems
