"""Password hashes are made and checked off the event loop, and an unknown account costs the same."""

from __future__ import annotations

import asyncio

from services.accounts.hashing import hash_password, needs_rehash, verify_password


async def _loop_turns_while(work: asyncio.Future[object]) -> int:
    turns = 0
    while not work.done():
        turns += 1
        await asyncio.sleep(0)
    return turns


async def test_hashing_leaves_the_event_loop_free() -> None:
    hashing = asyncio.ensure_future(hash_password("Tea-leaf-2026"))
    turns = await _loop_turns_while(hashing)
    assert turns > 1  # other work ran while the hash was made; on the loop itself it would be 1
    password_hash = hashing.result()
    assert isinstance(password_hash, str) and password_hash.startswith("$argon2")

    checking = asyncio.ensure_future(verify_password(password_hash, "Tea-leaf-2026"))
    assert await _loop_turns_while(checking) > 1
    assert checking.result() is True


async def test_a_wrong_password_or_no_account_is_false() -> None:
    password_hash = await hash_password("Tea-leaf-2026")
    assert await verify_password(password_hash, "tea-leaf-2026") is False
    assert await verify_password("not a hash", "Tea-leaf-2026") is False
    assert await verify_password(None, "Tea-leaf-2026") is False
    assert needs_rehash(password_hash) is False
