"""Constraints a request schema documents but the service checks itself.

Some fields are checked by the service rather than by the decoder, so that one answer lists every
problem with its own stable code (``unknown_locale``, ``password_too_short``…). The OpenAPI
document still states what the API accepts: :func:`documented` adds those constraints to the
field's schema without making the decoder refuse first.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar.params import QueryParameter
from msgspec import Meta


def documented(**schema: Any) -> Meta:
    """JSON Schema keywords (``min_length``, ``enum``, ``format``, ``pattern``…) for the document only."""
    # Litestar copies extra_json_schema["extra"] onto the field's OpenAPI schema.
    return Meta(extra_json_schema={"extra": schema})


# The page cursor of the keyset-paginated lists: opaque, as the previous page's `next_cursor` gave it.
Cursor = Annotated[
    str | None, QueryParameter(max_length=500, description="the previous page's `next_cursor`; absent: the first page")
]
