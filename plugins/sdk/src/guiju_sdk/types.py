"""Types shared between the host and plugins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PluginInfo:
    """What a plugin says about itself: its manifest.

    ``api_range`` is the range of plugin API versions the plugin supports, for example
    ``">=1.0,<2.0"``; the host refuses to load a plugin whose range excludes its own API version.
    """

    name: str
    version: str
    publisher: str
    summary_en: str
    summary_zh: str
    api_range: str
    category: str = "other"
    scopes: tuple[str, ...] = field(default_factory=tuple)


#: The callback a hook receives to register what it provides. The host decides what it accepts.
Register = Callable[[Any], None]
