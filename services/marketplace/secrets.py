"""Plugin secrets at rest: AES-GCM under a key ring from settings, with rotation.

A token is ``v1.<kid>.<nonce>.<ciphertext>`` (base64url parts). The associated data binds it to its
tenant, plugin and field, so a token copied into another tenant's (or field's) row does not decrypt.
New tokens use the ring's first key; any key of the ring decrypts, so rotation is: put the new key
first, keep the old one, run ``guiju plugin rotate-secrets``, then drop the old key.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.settings import Settings, SettingsError

TOKEN_VERSION = "v1"  # noqa: S105 - the token format, not a secret
DERIVED_KEY_ID = "k0"


class SecretUnreadable(Exception):
    """A token no key of the ring decrypts (a removed key, a tampered or moved token)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class KeyRing:
    """AES-256-GCM keys by id; the first encrypts."""

    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        if not settings.secrets_keys:
            if not settings.secret_key:
                raise SettingsError("GUIJU_SECRETS_KEYS or GUIJU_SECRET_KEY must be set to store plugin secrets.")
            derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"guiju plugin secrets").derive(
                settings.secret_key.encode()
            )
            return cls(((DERIVED_KEY_ID, derived),))
        keys: list[tuple[str, bytes]] = []
        for item in settings.secrets_keys:
            kid, _, encoded = item.partition(":")
            try:
                key = base64.b64decode(encoded.replace("-", "+").replace("_", "/") + "=" * (-len(encoded) % 4))
            except (binascii.Error, ValueError) as exc:
                raise SettingsError(f"GUIJU_SECRETS_KEYS: the key {kid!r} is not base64.") from exc
            if not kid or "." in kid or len(key) != 32:
                raise SettingsError(f"GUIJU_SECRETS_KEYS: {kid or '?'!r} must be 'kid:<32 bytes in base64>'.")
            keys.append((kid, key))
        return cls(tuple(keys))

    @property
    def current_id(self) -> str:
        return self.keys[0][0]

    def encrypt(self, plaintext: str, context: str) -> str:
        kid, key = self.keys[0]
        nonce = os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), context.encode())
        return ".".join((TOKEN_VERSION, kid, _b64(nonce), _b64(sealed)))

    def decrypt(self, token: str, context: str) -> str:
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != TOKEN_VERSION:
            raise SecretUnreadable("not a secret token")
        key = dict(self.keys).get(parts[1])
        if key is None:
            raise SecretUnreadable(f"the key {parts[1]!r} is no longer in GUIJU_SECRETS_KEYS")
        try:
            return AESGCM(key).decrypt(_unb64(parts[2]), _unb64(parts[3]), context.encode()).decode()
        except Exception as exc:  # InvalidTag, bad base64: the token was altered or moved
            raise SecretUnreadable("the token does not decrypt under its key") from exc

    def key_id_of(self, token: str) -> str:
        parts = token.split(".")
        return parts[1] if len(parts) == 4 else ""


def secret_context(tenant_id: object, plugin: str, field: str) -> str:
    """The associated data of one secret setting: what the token is bound to."""
    return f"{tenant_id}|{plugin}|{field}"
