"""The marketplace's settings and the key ring its secrets are encrypted with."""

from __future__ import annotations

from dataclasses import dataclass

from services.marketplace.secrets import KeyRing
from services.settings import Settings, load_settings


@dataclass
class _Config:
    settings: Settings | None = None
    keyring: KeyRing | None = None


_config = _Config()


def configure(settings: Settings) -> None:
    """Use ``settings`` (app and worker start-up): the secrets' key ring, admins, circuit breaker."""
    _config.settings = settings
    _config.keyring = KeyRing.from_settings(settings)


def settings() -> Settings:
    if _config.settings is None:
        configure(load_settings("embedded"))
    assert _config.settings is not None
    return _config.settings


def keyring() -> KeyRing:
    if _config.keyring is None:
        configure(settings())
    assert _config.keyring is not None
    return _config.keyring
