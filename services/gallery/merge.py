"""The three-way merge of an upgrade: base (the version installed), theirs (the workspace's item as
it is now, customised) and ours (the new version). Pure data, no I/O.

Values are JSON. Objects merge key by key; lists whose elements are objects with a unique ``key``
(a procedure's steps, a collection's fields, a checklist's items) merge element by element, so a
step the workspace renamed and a step the new version added are both kept; any other value is
compared whole. Where only one side changed something, that change wins; where both changed it
differently, it is a conflict, named by its path (``/steps/pack/title``) and decided by a
resolution: ``ours`` or ``theirs``. Until every conflict has a resolution the workspace's value
stands in the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Side = Literal["ours", "theirs"]


class _Absent:
    """A value that is not there: an item or key removed on one side."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class MergeConflict:
    """Both sides changed ``path`` differently; a value may be :data:`ABSENT` (removed on that side)."""

    path: str
    base: Any
    theirs: Any
    ours: Any


@dataclass(frozen=True)
class MergeChange:
    """What the merge does to the workspace at ``path``: ``before`` (theirs) becomes ``after``."""

    path: str
    before: Any
    after: Any


@dataclass
class MergeResult:
    value: Any
    changes: list[MergeChange] = field(default_factory=list)
    conflicts: list[MergeConflict] = field(default_factory=list)
    # Paths where the workspace's own change is kept (the new version did not touch them).
    kept: list[str] = field(default_factory=list)


def _keyed(value: Any) -> dict[str, Any] | None:
    """A list of objects with unique string keys, by key; None for any other value."""
    if not isinstance(value, list) or not value:
        return None
    by_key: dict[str, Any] = {}
    for element in value:
        if not isinstance(element, dict) or not isinstance(element.get("key"), str) or element["key"] in by_key:
            return None
        by_key[element["key"]] = element
    return by_key


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def merge(base: Any, theirs: Any, ours: Any, resolutions: Mapping[str, Side] | None = None) -> MergeResult:
    """Merge ``ours`` into ``theirs`` relative to ``base``; conflicts named in ``resolutions`` are decided."""
    result = MergeResult(ABSENT)
    result.value = _merge(base, theirs, ours, "", resolutions or {}, result)
    return result


def _merge(base: Any, theirs: Any, ours: Any, path: str, resolutions: Mapping[str, Side], out: MergeResult) -> Any:
    if theirs == ours:
        return theirs
    if theirs == base:
        out.changes.append(MergeChange(path or "/", theirs, ours))
        return ours
    if ours == base:
        out.kept.append(path or "/")
        return theirs
    if isinstance(theirs, dict) and isinstance(ours, dict) and isinstance(base, (dict, _Absent)):
        return _merge_objects(base if isinstance(base, dict) else {}, theirs, ours, path, resolutions, out)
    keyed = (_keyed(base) if base not in ([], ABSENT) else {}), _keyed(theirs), _keyed(ours)
    if keyed[0] is not None and keyed[1] is not None and keyed[2] is not None:
        base_list = base if isinstance(base, list) else []
        return _merge_keyed(base_list, theirs, ours, keyed, path, resolutions, out)  # type: ignore[arg-type]
    decided = resolutions.get(path or "/")
    if decided is None:
        out.conflicts.append(MergeConflict(path or "/", base, theirs, ours))
        return theirs
    chosen = ours if decided == "ours" else theirs
    if chosen != theirs:
        out.changes.append(MergeChange(path or "/", theirs, chosen))
    return chosen


def _merge_objects(
    base: dict[str, Any],
    theirs: dict[str, Any],
    ours: dict[str, Any],
    path: str,
    resolutions: Mapping[str, Side],
    out: MergeResult,
) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    order = list(theirs) + [k for k in ours if k not in theirs]
    for key in order:
        value = _merge(
            base.get(key, ABSENT),
            theirs.get(key, ABSENT),
            ours.get(key, ABSENT),
            f"{path}/{_escape(key)}",
            resolutions,
            out,
        )
        if value is not ABSENT:
            merged[key] = value
    return merged


def _merge_keyed(
    base: list[Any],
    theirs: list[Any],
    ours: list[Any],
    keyed: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
    path: str,
    resolutions: Mapping[str, Side],
    out: MergeResult,
) -> list[Any]:
    by_base, by_theirs, by_ours = keyed
    merged: dict[str, Any] = {}
    for key in list(by_theirs) + [k for k in by_ours if k not in by_theirs] + [k for k in by_base if k not in merged]:
        if key in merged:
            continue
        value = _merge(
            by_base.get(key, ABSENT),
            by_theirs.get(key, ABSENT),
            by_ours.get(key, ABSENT),
            f"{path}/{_escape(key)}",
            resolutions,
            out,
        )
        merged[key] = value
    survivors = {k for k, v in merged.items() if v is not ABSENT}
    return [merged[k] for k in _order(base, theirs, ours, survivors)]


def _order(base: list[Any], theirs: list[Any], ours: list[Any], survivors: set[str]) -> list[str]:
    """The merged list's order: the new version's, unless the workspace reordered the common
    elements itself; elements only one side has follow the element they followed on that side."""
    keys = [[e["key"] for e in side] for side in (base, theirs, ours)]
    base_keys, theirs_keys, ours_keys = keys
    reordered = [k for k in theirs_keys if k in base_keys] != [k for k in base_keys if k in theirs_keys]
    skeleton, other = (theirs_keys, ours_keys) if reordered else (ours_keys, theirs_keys)
    order = [k for k in skeleton if k in survivors]
    for index, key in enumerate(other):
        if key in order or key not in survivors:
            continue
        before = next((k for k in reversed(other[:index]) if k in order), None)
        order.insert(order.index(before) + 1 if before is not None else 0, key)
    order += [k for k in survivors if k not in order]
    return order
