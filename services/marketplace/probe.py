"""Load one plugin as the host would and print, as one JSON object on stdout, what it registers.

``python -P probe.py NAME VALUE`` (the entry point's name and value) is run by
:mod:`services.marketplace.checks` in a subprocess whose path holds the plugin's code, so a plugin
that hangs, crashes or pollutes its interpreter cannot affect the caller. It imports only the SDK
and the standard library, as a plugin's own environment would have.

The JSON object: ``import_error`` (why the plugin did not load, or null), ``hooks`` (the hooks it
implements), ``hook_problems`` (hooks the SDK does not specify, invalid implementations),
``registration_problems`` (what :func:`guiju_sdk.registry.collect` refused), ``manifest`` (built by
:func:`guiju_sdk.manifest_from_plugin`, or null) and ``manifest_error`` (why there is none).
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from importlib.metadata import EntryPoint
from typing import Any

import pluggy
from guiju_sdk import ENTRY_POINT_GROUP, PluginInfo, manifest_from_plugin, registry


def probe(name: str, value: str) -> dict[str, Any]:
    """What the plugin at entry point ``name = value`` registers."""
    found: dict[str, Any] = {
        "import_error": None,
        "hooks": [],
        "hook_problems": [],
        "registration_problems": [],
        "manifest": None,
        "manifest_error": None,
        "deprecations": [],
    }
    try:
        plugin = EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP).load()
    except Exception as exc:
        found["import_error"] = f"importing {value} failed: {type(exc).__name__}: {exc}"
        return found
    manager = registry.new_manager()
    try:
        manager.register(plugin, name=name)
    except (ValueError, pluggy.PluginValidationError) as exc:
        found["hook_problems"].append(f"invalid hook implementations: {exc}")
        return found
    callers = manager.get_hookcallers(plugin) or []
    found["hooks"] = sorted(caller.name for caller in callers)
    found["hook_problems"] = [
        f"{caller.name} is not a hook of the SDK (its hooks: {', '.join(registry.hook_names())})"
        for caller in callers
        if not caller.has_spec()
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # reported in the JSON instead
        found["deprecations"] = registry.deprecations(manager, plugin)
    registered = registry.collect(manager, plugin)
    found["registration_problems"] = registered.problems
    infos: list[object] = []
    try:
        manager.hook.guiju_plugin_info(register=infos.append)
    except Exception as exc:
        found["manifest_error"] = f"guiju_plugin_info raised {type(exc).__name__}: {exc}"
        return found
    if len(infos) != 1 or not isinstance(infos[0], PluginInfo):
        found["manifest_error"] = (
            f"guiju_plugin_info must register exactly one PluginInfo; it registered {len(infos)} object(s)"
        )
        return found
    found["manifest"] = manifest_from_plugin(infos[0], registered)
    return found


def main() -> None:
    name, value = sys.argv[1], sys.argv[2]
    out = sys.stdout
    # What the plugin prints while loading goes to stderr: stdout carries the JSON only.
    with contextlib.redirect_stdout(sys.stderr):
        found = probe(name, value)
        try:
            text = json.dumps(found, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            found["manifest"], found["manifest_error"] = None, f"the manifest is not JSON: {exc}"
            text = json.dumps(found, ensure_ascii=False)
    out.write(text + "\n")


if __name__ == "__main__":
    main()
