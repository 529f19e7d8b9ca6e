"""One Settings object, read from ``GUIJU_*`` environment variables, with embedded defaults.

The embedded defaults (SQLite under ``var/``, no Redis, a development secret kept in ``var/``)
let ``make run`` start the whole platform on a fresh machine. ``production`` mode is what
``guiju api|worker|scheduler`` use: it refuses a missing or weak secret key.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from limits import parse_many

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIN_SECRET_KEY_LENGTH = 32
# Every plan keeps automation execution history at least this long.
MIN_EXECUTION_RETENTION_DAYS = 90

# embedded: `guiju run`; production: api, worker, scheduler; admin: one-off commands (no secret needed).
Mode = Literal["embedded", "production", "admin"]


class SettingsError(RuntimeError):
    """A setting is missing or wrong; the message says which and what to do."""


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(f"GUIJU_{name}")
    return value if value not in (None, "") else default


def _bool(name: str, default: bool) -> bool:
    raw = _env(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"GUIJU_{name} must be an integer, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    """Every GUIJU_* setting; the README lists them in a table."""

    var_dir: Path = field(default_factory=lambda: PROJECT_ROOT / "var")
    database_url: str = ""
    migration_database_url: str = ""
    db_app_role: str = "guiju_app"
    db_pool_size: int = 10
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    secret_key: str = ""
    base_url: str = ""
    log_level: str = "INFO"
    cookie_secure: bool = False
    session_ttl_hours: int = 24 * 14
    verify_token_ttl_hours: int = 48
    reset_token_ttl_minutes: int = 60
    invitation_ttl_days: int = 7
    # Rate limits in the `limits` notation, tiers separated by ";" (see services/ratelimit.py).
    login_account_limits: str = "5/minute;20/hour;100/day"  # failed sign-ins per account
    login_client_limits: str = "60/minute;600/hour"  # failed sign-ins per client address
    mail_link_limits: str = "3/hour;10/day"  # reset and verification mails per address
    api_client_limits: str = "600/minute;20000/hour"  # API calls per OAuth app or personal token
    oauth_access_token_minutes: int = 60
    oauth_refresh_token_days: int = 30
    password_min_score: int = 3  # zxcvbn's 0-4 score a new password needs
    reauthentication_window_minutes: int = 10  # how long a re-authentication covers sensitive actions
    # Peers (IP addresses or CIDR networks) whose X-Forwarded-For/-Proto are believed; none by default.
    trusted_proxies: tuple[str, ...] = ()
    worker_threads: int = 4
    relay_interval_seconds: float = 1.0
    broker_heartbeat_timeout_ms: int = 60_000
    plugins_allow: tuple[str, ...] = ()
    plugins_deny: tuple[str, ...] = ()
    storage_dir: Path | None = None  # None: var_dir / "files"
    max_upload_mb: int = 25
    automation_max_attempts: int = 5
    automation_tenant_concurrency: int = 4
    automation_max_chain: int = 5  # automation executions one event may cause in a row (loop guard)
    execution_retention_days: int = 90
    webhook_max_bytes: int = 256 * 1024
    webhook_allow_http_hosts: tuple[str, ...] = ()  # outbound webhooks may use plain http to these hosts
    # Webhook subscriptions: how long a receiver has to answer, the waits between a failed
    # delivery's attempts (seconds), failed attempts in a row that turn a subscription off, and how
    # long the previous secret still signs after a rotation.
    webhook_delivery_timeout_seconds: float = 10.0
    webhook_delivery_retry_seconds: tuple[float, ...] = (10, 60, 300, 1800, 7200, 21600, 43200)
    webhook_delivery_disable_after: int = 50
    webhook_secret_overlap_hours: int = 24
    # "kid:base64-32-bytes" items, newest first: plugin secrets are encrypted with the first and
    # decrypted with any (key rotation). Empty: one key derived from the secret key.
    secrets_keys: tuple[str, ...] = ()
    platform_admins: tuple[str, ...] = ()  # e-mail addresses of the platform's admins (plugin review)
    plugin_circuit_failures: int = 5  # consecutive failures that open a tenant x plugin circuit
    plugin_circuit_cooldown_seconds: int = 300
    plugin_http_max_timeout_seconds: float = 30.0
    plugin_allow_http_hosts: tuple[str, ...] = ()  # remote plugins may use plain http to these hosts
    # The platform's own mail (verification, reset, invitation) goes through the messaging plugin
    # to this server: smtp://user:password@host:587 (STARTTLS), smtps://…:465 (TLS), smtp+plain://…:25.
    smtp_url: str = ""
    mail_from: str = ""  # "Guiju <no-reply@example.com>"
    # Directories of the operator's own template packs (each subdirectory one pack), besides the platform's.
    template_packs: tuple[str, ...] = ()
    # The sandbox submitted plugins' checks run in (services/marketplace/sandbox.py).
    sandbox_bwrap: str = "bwrap"
    sandbox_uid: int = 65534
    sandbox_gid: int = 65534
    sandbox_cpu_seconds: int = 120
    sandbox_memory_mb: int = 2048
    sandbox_processes: int = 128
    sandbox_file_size_mb: int = 64
    sandbox_writable_mb: int = 256
    sandbox_open_files: int = 256
    plugin_check_load_seconds: int = 60
    plugin_check_tests_seconds: int = 300

    def __post_init__(self) -> None:
        if self.execution_retention_days < MIN_EXECUTION_RETENTION_DAYS:
            raise SettingsError(
                f"GUIJU_EXECUTION_RETENTION_DAYS is {self.execution_retention_days}: execution history is kept "
                f"at least {MIN_EXECUTION_RETENTION_DAYS} days."
            )
        for name in ("login_account_limits", "login_client_limits", "mail_link_limits", "api_client_limits"):
            try:
                parse_many(getattr(self, name))
            except ValueError as exc:
                raise SettingsError(
                    f"GUIJU_{name.upper()} is {getattr(self, name)!r}: write limits like '5/minute;20/hour'."
                ) from exc
        if not 0 <= self.password_min_score <= 4:
            raise SettingsError(f"GUIJU_PASSWORD_MIN_SCORE is {self.password_min_score}: use 0 to 4.")
        if self.webhook_delivery_timeout_seconds <= 0 or any(w < 0 for w in self.webhook_delivery_retry_seconds):
            raise SettingsError("GUIJU_WEBHOOK_DELIVERY_TIMEOUT_SECONDS is positive, and no retry wait is negative.")
        if self.webhook_delivery_disable_after < 1:
            raise SettingsError("GUIJU_WEBHOOK_DELIVERY_DISABLE_AFTER must be at least 1.")
        if self.reauthentication_window_minutes < 1:
            raise SettingsError("GUIJU_REAUTHENTICATION_WINDOW_MINUTES must be at least 1.")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError as exc:
                raise SettingsError(
                    f"GUIJU_TRUSTED_PROXIES has {proxy!r}: list IP addresses or CIDR networks (10.0.0.0/8)."
                ) from exc
        # The sandbox's user is never root, and each of its limits is a real one.
        positive = [
            "sandbox_uid",
            "sandbox_gid",
            "sandbox_cpu_seconds",
            "sandbox_memory_mb",
            "sandbox_processes",
            "sandbox_file_size_mb",
            "sandbox_writable_mb",
            "sandbox_open_files",
            "plugin_check_load_seconds",
            "plugin_check_tests_seconds",
        ]
        wrong = [f"GUIJU_{name.upper()} is {getattr(self, name)}" for name in positive if getattr(self, name) <= 0]
        if wrong:
            raise SettingsError(f"{'; '.join(wrong)}: each must be positive (the sandbox's user is never root)")

    @property
    def files_dir(self) -> Path:
        """Where uploaded files are kept on local disk."""
        return self.storage_dir or self.var_dir / "files"

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")

    @property
    def public_url(self) -> str:
        return self.base_url or f"http://{self.host}:{self.port}"


def _dev_secret(var_dir: Path) -> str:
    """A random development secret persisted in var/, so embedded sessions survive restarts."""
    path = var_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key


def load_settings(mode: Mode = "embedded") -> Settings:
    """Read the environment. In production mode a missing or short secret key is refused."""
    var_dir = Path(_env("VAR_DIR", str(PROJECT_ROOT / "var")) or "var")
    database_url = _env("DATABASE_URL") or f"sqlite+aiosqlite:///{var_dir / 'guiju.db'}"
    secret_key = _env("SECRET_KEY") or ""
    if mode == "production":
        if not secret_key:
            raise SettingsError(
                "GUIJU_SECRET_KEY is not set: production needs a random secret of at least "
                f"{MIN_SECRET_KEY_LENGTH} characters (for example `python -c 'import secrets; "
                "print(secrets.token_urlsafe(48))'`)."
            )
        if len(secret_key) < MIN_SECRET_KEY_LENGTH:
            raise SettingsError(
                f"GUIJU_SECRET_KEY is {len(secret_key)} characters long: production needs at least "
                f"{MIN_SECRET_KEY_LENGTH} random characters."
            )
    elif mode == "embedded" and not secret_key:
        secret_key = _dev_secret(var_dir)

    def _list(name: str) -> tuple[str, ...]:
        return tuple(p.strip() for p in (_env(name) or "").split(",") if p.strip())

    return Settings(
        var_dir=var_dir,
        database_url=database_url,
        migration_database_url=_env("MIGRATION_DATABASE_URL") or database_url,
        db_app_role=_env("DB_APP_ROLE", "guiju_app") or "guiju_app",
        db_pool_size=_int("DB_POOL_SIZE", 10),
        redis_url=_env("REDIS_URL"),
        host=_env("HOST", "127.0.0.1") or "127.0.0.1",
        port=_int("PORT", 8000),
        secret_key=secret_key,
        base_url=_env("BASE_URL", "") or "",
        log_level=(_env("LOG_LEVEL", "INFO") or "INFO").upper(),
        cookie_secure=_bool("COOKIE_SECURE", mode == "production"),
        session_ttl_hours=_int("SESSION_TTL_HOURS", 24 * 14),
        verify_token_ttl_hours=_int("VERIFY_TOKEN_TTL_HOURS", 48),
        reset_token_ttl_minutes=_int("RESET_TOKEN_TTL_MINUTES", 60),
        invitation_ttl_days=_int("INVITATION_TTL_DAYS", 7),
        login_account_limits=_env("LOGIN_ACCOUNT_LIMITS", Settings.login_account_limits) or "",
        login_client_limits=_env("LOGIN_CLIENT_LIMITS", Settings.login_client_limits) or "",
        mail_link_limits=_env("MAIL_LINK_LIMITS", Settings.mail_link_limits) or "",
        api_client_limits=_env("API_CLIENT_LIMITS", Settings.api_client_limits) or "",
        oauth_access_token_minutes=_int("OAUTH_ACCESS_TOKEN_MINUTES", Settings.oauth_access_token_minutes),
        oauth_refresh_token_days=_int("OAUTH_REFRESH_TOKEN_DAYS", Settings.oauth_refresh_token_days),
        password_min_score=_int("PASSWORD_MIN_SCORE", Settings.password_min_score),
        reauthentication_window_minutes=_int(
            "REAUTHENTICATION_WINDOW_MINUTES", Settings.reauthentication_window_minutes
        ),
        trusted_proxies=_list("TRUSTED_PROXIES"),
        worker_threads=_int("WORKER_THREADS", 4),
        relay_interval_seconds=float(_env("RELAY_INTERVAL_SECONDS", "1.0") or "1.0"),
        broker_heartbeat_timeout_ms=_int("BROKER_HEARTBEAT_TIMEOUT_MS", 60_000),
        plugins_allow=_list("PLUGINS_ALLOW"),
        plugins_deny=_list("PLUGINS_DENY"),
        storage_dir=Path(_env("STORAGE_DIR") or var_dir / "files"),
        max_upload_mb=_int("MAX_UPLOAD_MB", 25),
        automation_max_attempts=_int("AUTOMATION_MAX_ATTEMPTS", 5),
        automation_tenant_concurrency=_int("AUTOMATION_TENANT_CONCURRENCY", 4),
        automation_max_chain=_int("AUTOMATION_MAX_CHAIN", 5),
        execution_retention_days=_int("EXECUTION_RETENTION_DAYS", 90),
        webhook_max_bytes=_int("WEBHOOK_MAX_BYTES", 256 * 1024),
        webhook_allow_http_hosts=_list("WEBHOOK_ALLOW_HTTP_HOSTS"),
        webhook_delivery_timeout_seconds=float(_env("WEBHOOK_DELIVERY_TIMEOUT_SECONDS", "10") or "10"),
        webhook_delivery_retry_seconds=tuple(float(w) for w in _list("WEBHOOK_DELIVERY_RETRY_SECONDS"))
        or Settings.webhook_delivery_retry_seconds,
        webhook_delivery_disable_after=_int("WEBHOOK_DELIVERY_DISABLE_AFTER", 50),
        webhook_secret_overlap_hours=_int("WEBHOOK_SECRET_OVERLAP_HOURS", 24),
        secrets_keys=_list("SECRETS_KEYS"),
        platform_admins=tuple(e.lower() for e in _list("PLATFORM_ADMINS")),
        plugin_circuit_failures=_int("PLUGIN_CIRCUIT_FAILURES", 5),
        plugin_circuit_cooldown_seconds=_int("PLUGIN_CIRCUIT_COOLDOWN_SECONDS", 300),
        plugin_http_max_timeout_seconds=float(_env("PLUGIN_HTTP_MAX_TIMEOUT_SECONDS", "30") or "30"),
        plugin_allow_http_hosts=_list("PLUGIN_ALLOW_HTTP_HOSTS"),
        smtp_url=_env("SMTP_URL", "") or "",
        mail_from=_env("MAIL_FROM", "") or "",
        template_packs=_list("TEMPLATE_PACKS"),
        sandbox_bwrap=_env("SANDBOX_BWRAP", "bwrap") or "bwrap",
        sandbox_uid=_int("SANDBOX_UID", 65534),
        sandbox_gid=_int("SANDBOX_GID", 65534),
        sandbox_cpu_seconds=_int("SANDBOX_CPU_SECONDS", 120),
        sandbox_memory_mb=_int("SANDBOX_MEMORY_MB", 2048),
        sandbox_processes=_int("SANDBOX_PROCESSES", 128),
        sandbox_file_size_mb=_int("SANDBOX_FILE_SIZE_MB", 64),
        sandbox_writable_mb=_int("SANDBOX_WRITABLE_MB", 256),
        sandbox_open_files=_int("SANDBOX_OPEN_FILES", 256),
        plugin_check_load_seconds=_int("PLUGIN_CHECK_LOAD_SECONDS", 60),
        plugin_check_tests_seconds=_int("PLUGIN_CHECK_TESTS_SECONDS", 300),
    )


def setting_names() -> list[str]:
    """The GUIJU_* names of every setting (a test keeps the README's table in step with this)."""
    names = {f.name.upper() for f in fields(Settings)}
    return sorted(f"GUIJU_{n}" for n in names)
