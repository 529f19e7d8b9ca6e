"""Throttling of password guesses and of mailed links.

Password checks (sign-in, re-authentication, password change) are counted two ways:

- per account (the typed e-mail, whether or not an account has it, so the answers do not tell):
  strict, in tiers that make a backoff (``GUIJU_LOGIN_ACCOUNT_LIMITS``, by default 5 a minute,
  20 an hour, 100 a day). Every attempt counts, so parallel guesses cannot slip through together;
  a correct password clears the count. Guessing one account from many addresses is still cut short.
- per client address, failures only: generous (``GUIJU_LOGIN_CLIENT_LIMITS``), so that people
  behind one shared proxy are not locked out by someone guessing other accounts from there, while
  one address spraying guesses over many accounts is.

Reset and verification mails are limited per address (``GUIJU_MAIL_LINK_LIMITS``) and reset requests
per client too, so nobody can flood a mailbox through the platform.
"""

from __future__ import annotations

import hashlib
from functools import cache

from services.accounts.emails import login_email
from services.ratelimit import Limit, RateLimiter, too_many
from services.settings import Settings
from services.web.i18n import N_

LOGIN_LIMITED = N_("Too many sign-in attempts; wait and try again.")


@cache
def _limit(name: str, notation: str) -> Limit:
    return Limit.parse(name, notation)


def _account_key(email: str) -> str:
    # A digest: the limiter's storage never holds the addresses people typed.
    return hashlib.sha256(login_email(email).encode()).hexdigest()


async def before_password_check(limiter: RateLimiter, settings: Settings, email: str, client: str) -> None:
    """Count a password attempt on ``email`` from ``client``; 429 when either has had too many."""
    client_limit = _limit("password-client", settings.login_client_limits)
    wait = await limiter.blocked(client_limit, client)
    if wait is None:
        wait = await limiter.hit(_limit("password-account", settings.login_account_limits), _account_key(email))
    if wait is not None:
        raise too_many(wait, "login_rate_limited", LOGIN_LIMITED)


async def password_failed(limiter: RateLimiter, settings: Settings, client: str) -> None:
    await limiter.hit(_limit("password-client", settings.login_client_limits), client)


async def password_succeeded(limiter: RateLimiter, settings: Settings, email: str) -> None:
    await limiter.clear(_limit("password-account", settings.login_account_limits), _account_key(email))


async def before_mail_link(limiter: RateLimiter, settings: Settings, email: str, client: str | None = None) -> None:
    """Count a mailed link to ``email`` (and a request from ``client``); 429 when there were too many."""
    wait = None
    if client is not None:
        wait = await limiter.hit(_limit("mail-client", settings.login_client_limits), client)
    if wait is None:
        wait = await limiter.hit(_limit("mail-address", settings.mail_link_limits), _account_key(email))
    if wait is not None:
        raise too_many(wait, "mail_rate_limited", N_("Too many mails were asked for; wait and try again."))
