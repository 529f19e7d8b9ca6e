"""Password and token hashes: argon2 for passwords, SHA-256 for the random tokens of links and
login sessions (only their hashes are stored)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


# ---------------------------------------------------------------- secrets and tokens


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    raw = secrets.token_urlsafe(32)
    return raw, hash_token(raw)


# argon2 costs tens of milliseconds of CPU per hash and releases the GIL while it works: on a
# worker thread, one sign-in does not stall every other request the process is serving.


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``. With no hash (no such account) it still
    spends a verification's time, against a stand-in hash, and answers False."""
    return await asyncio.to_thread(_verify, password_hash, password)


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with weaker parameters than today's (rehash at the next sign-in)."""
    return _hasher.check_needs_rehash(password_hash)


_DUMMY_HASH = _hasher.hash("guiju-timing-equaliser")
