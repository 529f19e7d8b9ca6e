"""Each OAuth scope in plain words, for the consent page and the developer pages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from services.web.i18n import translate

SCOPE_TEXTS: Final[Mapping[str, str]] = {}


def scope_phrase(scope: str, locale: str) -> str:
    """What ``scope`` lets an app do, in ``locale``."""
    return translate(SCOPE_TEXTS[scope], locale) if scope in SCOPE_TEXTS else scope
