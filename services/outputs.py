"""One mapper from a row (or any object) to the response struct that shows it.

Response structs name their fields after the model's attributes, so most of a mapping is "copy the
attribute of the same name"; a mapper states only what differs (a renamed or computed field).
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

import msgspec

S = TypeVar("S", bound=msgspec.Struct)


@cache
def _fields(out_type: type[msgspec.Struct]) -> tuple[tuple[str, bool], ...]:
    """Each field's name, and whether the struct has a default for it."""
    return tuple(
        (f.name, f.default is not msgspec.NODEFAULT or f.default_factory is not msgspec.NODEFAULT)
        for f in msgspec.structs.fields(out_type)
    )


def struct_from(out_type: type[S], source: object, /, **values: Any) -> S:
    """``out_type`` with each field taken from ``values``, else from ``source``'s attribute of the same name.

    A field with a default that neither gives keeps its default. The struct is built directly, as a
    hand-written mapper would: the values are the service's own, already checked.
    """
    kwargs: dict[str, Any] = {}
    for name, has_default in _fields(out_type):
        if name in values:
            kwargs[name] = values[name]
        elif not has_default or hasattr(source, name):
            kwargs[name] = getattr(source, name)
    return out_type(**kwargs)
