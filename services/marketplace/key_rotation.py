"""Rotating the key of the plugins' stored secrets: tenants' settings and remote plugins' signing keys."""

from __future__ import annotations

from sqlalchemy import select

from services.db import open_session
from services.marketplace.configuration import keyring
from services.marketplace.models import PluginInstallation, PluginVersion
from services.marketplace.secrets import secret_context
from tenants.context import system_scope


def platform_secret_context(plugin: str, version: str) -> str:
    """The associated data of a remote plugin version's signing secret."""
    return f"platform|{plugin}|{version}"


async def rotate_secrets() -> int:
    """Re-encrypt every stored plugin secret (tenants' settings, remote plugins' signing keys) that
    is not under the key ring's current key; returns how many tokens changed. Run after putting a
    new key first in ``GUIJU_SECRETS_KEYS``, before removing the old one."""
    ring = keyring()
    changed = 0
    with system_scope():
        async with open_session(system=True) as db:
            for installation in await db.scalars(select(PluginInstallation).with_for_update()):
                tokens = dict(installation.secrets)
                for name, token in tokens.items():
                    if ring.key_id_of(token) != ring.current_id:
                        context = secret_context(installation.tenant_id, installation.plugin, name)
                        tokens[name] = ring.encrypt(ring.decrypt(token, context), context)
                        changed += 1
                installation.secrets = tokens
            for version in await db.scalars(
                select(PluginVersion).where(PluginVersion.signing_secret.is_not(None)).with_for_update()
            ):
                token = version.signing_secret or ""
                if ring.key_id_of(token) != ring.current_id:
                    context = platform_secret_context(version.plugin, version.version)
                    version.signing_secret = ring.encrypt(ring.decrypt(token, context), context)
                    changed += 1
    return changed
