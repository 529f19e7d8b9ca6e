"""The plugin API version and the compatibility rule between a plugin and the host."""

from __future__ import annotations

#: The pluggy project name shared by the host's hookspecs and every plugin's hookimpls.
PROJECT_NAME = "guiju"

#: The entry-point group the host scans for plugins.
ENTRY_POINT_GROUP = "guiju"

#: The plugin API version this SDK describes, as (major, minor).
#: A minor bump adds hooks or optional arguments; a major bump may remove or change them.
API_VERSION: tuple[int, int] = (1, 3)

#: What the API still accepts but will drop at the next major version: a hook (``"guiju_x"``) or a
#: hook's argument (``"guiju_x:arg"``), with what to use instead. A plugin using one still loads;
#: the host, ``guiju plugin check`` and the testing harness warn (``DeprecationWarning``). Each
#: stays at least one minor version before its major version removes it.
DEPRECATED: dict[str, str] = {}


def _parse(version: str) -> tuple[int, int]:
    parts = version.strip().split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"an API version is 'MAJOR.MINOR', got {version!r}")
    return int(parts[0]), int(parts[1])


def api_version_supported(api_range: str, host: tuple[int, int] = API_VERSION) -> bool:
    """Tell whether ``host`` lies in a plugin's declared ``api_range``.

    The range is written ``">=1.0,<2.0"``: comma-separated comparisons, each an operator
    (``>=``, ``>``, ``<=``, ``<``, ``==``) followed by ``MAJOR.MINOR``. Raises ``ValueError`` for a
    range that cannot be read, so a malformed manifest is refused with its reason.
    """
    clauses = [c.strip() for c in api_range.split(",") if c.strip()]
    if not clauses:
        raise ValueError("the API range is empty")
    for clause in clauses:
        for op in (">=", "<=", "==", ">", "<"):
            if clause.startswith(op):
                bound = _parse(clause[len(op) :])
                ok = {
                    ">=": host >= bound,
                    "<=": host <= bound,
                    "==": host == bound,
                    ">": host > bound,
                    "<": host < bound,
                }[op]
                if not ok:
                    return False
                break
        else:
            raise ValueError(f"cannot read the API range clause {clause!r}")
    return True
