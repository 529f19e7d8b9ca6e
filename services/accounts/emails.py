"""E-mail addresses: what an account, an invitation or a reset request may name.

The part before the @ is ASCII (the platform's mail is sent without SMTPUTF8). The domain may be
internationalised (``mei@例子.中国``) and is kept in its Unicode form. Characters an input method
types in full width (``ｍｅｉ＠ｅｘａｍｐｌｅ．ｃｏｍ``, or the ideographic full stop 。) are refused
rather than folded to their ASCII look-alikes: the person sees the mistake instead of an account
under an address they did not type.
"""

from __future__ import annotations

import unicodedata

from email_validator import EmailNotValidError, validate_email

from tenants.errors import FieldProblem

# Dots that IDNA would silently read as "." between domain labels.
_DOT_LOOKALIKES = frozenset("\u3002\uff0e\uff61")


def _lookalikes(raw: str) -> list[str]:
    """The characters of ``raw`` that stand for ASCII ones in another width or form."""
    found = [c for c in raw if c in _DOT_LOOKALIKES or unicodedata.normalize("NFKC", c) != c]
    return list(dict.fromkeys(found))


def normalize_email(raw: str, pointer: str = "/email") -> tuple[str | None, FieldProblem | None]:
    """The address as stored (lower case, domain in Unicode), or the problem with it."""
    lookalikes = _lookalikes(raw)
    if lookalikes:
        shown = ", ".join(f"'{c}' (U+{ord(c):04X})" for c in lookalikes[:5])
        return None, FieldProblem.of(
            pointer=pointer,
            code="invalid_email",
            message="type the address in half-width (ASCII) characters, not full-width or look-alikes: {shown}",
            shown=shown,
        )
    try:
        result = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        return None, FieldProblem(pointer=pointer, code="invalid_email", message=str(exc))
    return result.normalized.lower(), None


def login_email(raw: str) -> str:
    """The form of a typed address that sign-in looks up and throttles by."""
    return raw.strip().lower()
