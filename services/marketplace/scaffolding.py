"""``guiju plugin new``: a new plugin distribution that passes ``guiju plugin check`` as it is.

The files are rendered from the templates in ``scaffold/`` (``string.Template``); a path segment
``package`` becomes the plugin's Python package, and ``.tmpl`` is dropped.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

from guiju_sdk import API_VERSION, plugin_name_problem

DEFAULT_PUBLISHER = "Unnamed publisher"
_TEMPLATES = files("services.marketplace").joinpath("scaffold")


class ScaffoldRefused(Exception):
    """The plugin cannot be created as asked (an invalid name, a target that is not empty)."""


def package_name(name: str) -> str:
    """The Python package of the plugin ``name``: ``odoo-sync`` → ``odoo_sync``."""
    return name.replace("-", "_")


def _templates(folder: Traversable, relative: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    found: list[tuple[tuple[str, ...], str]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            found.extend(_templates(entry, (*relative, entry.name)))
        elif entry.name.endswith(".tmpl"):
            found.append(((*relative, entry.name.removesuffix(".tmpl")), entry.read_text(encoding="utf-8")))
    return found


def _sdk_requirement() -> str:
    # At least the SDK the plugin was created with: the scaffold uses its API.
    try:
        return f"guiju-sdk>={version('guiju-sdk')}"
    except PackageNotFoundError:
        return "guiju-sdk"


def new_plugin(name: str, directory: Path, *, publisher: str = DEFAULT_PUBLISHER) -> Path:
    """Create the distribution of plugin ``name`` in ``directory / name``; its path.

    Raises :class:`ScaffoldRefused` for an invalid name or publisher, or when the target exists
    and is not empty.
    """
    problem = plugin_name_problem(name)
    if problem:
        raise ScaffoldRefused(f"cannot create the plugin: {problem}")
    if not publisher.strip() or not publisher.isprintable():
        raise ScaffoldRefused("the publisher is one line of printable text")
    target = Path(directory) / name
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ScaffoldRefused(f"{target} already exists and is not empty")
    package = package_name(name)
    values = {
        "name": name,
        "package": package,
        "publisher": publisher.strip(),
        # A JSON string is also a valid Python and TOML string literal, whatever the text holds.
        "publisher_literal": json.dumps(publisher.strip(), ensure_ascii=False),
        "api_range": f">={API_VERSION[0]}.{API_VERSION[1]},<{API_VERSION[0] + 1}.0",
        "sdk_requirement": _sdk_requirement(),
    }
    for parts, text in _templates(_TEMPLATES):
        path = target.joinpath(*(package if part == "package" else part for part in parts))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(text).substitute(values), encoding="utf-8")
    return target
