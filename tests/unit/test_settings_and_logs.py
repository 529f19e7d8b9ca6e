"""Settings from GUIJU_* variables, the README's table of them, and JSON logs that never leak secrets."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from services.logs import JsonFormatter, actor_var, request_id_var
from services.settings import SettingsError, load_settings, setting_names
from tenants.context import tenant_scope

ROOT = Path(__file__).resolve().parents[2]


def test_embedded_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GUIJU_VAR_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'guiju.db'}"
    assert settings.redis_url is None
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert len(settings.secret_key) >= 32
    assert load_settings().secret_key == settings.secret_key  # kept in var/ across restarts


def test_production_needs_a_real_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GUIJU_SECRET_KEY", raising=False)
    with pytest.raises(SettingsError, match="GUIJU_SECRET_KEY is not set"):
        load_settings("production")
    monkeypatch.setenv("GUIJU_SECRET_KEY", "short")
    with pytest.raises(SettingsError, match="at least 32"):
        load_settings("production")
    monkeypatch.setenv("GUIJU_PORT", "eighty")
    monkeypatch.setenv("GUIJU_SECRET_KEY", "s" * 40)
    with pytest.raises(SettingsError, match="GUIJU_PORT must be an integer"):
        load_settings("production")


def test_the_readme_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`(GUIJU_[A-Z_]+)`", readme))
    assert set(setting_names()) - documented == set()


def _format(record_extra: dict[str, object]) -> dict[str, object]:
    record = logging.makeLogRecord({"name": "guiju.test", "levelname": "INFO", "msg": "hello", **record_extra})
    return json.loads(JsonFormatter().format(record))  # type: ignore[no-any-return]


def test_json_logs_carry_request_tenant_and_actor() -> None:
    import uuid

    tenant = uuid.uuid4()
    rid = request_id_var.set("req-12345678")
    actor = actor_var.set("user:42")
    try:
        with tenant_scope(tenant):
            line = _format({"path": "/api/v1/members"})
    finally:
        request_id_var.reset(rid)
        actor_var.reset(actor)
    assert line["request_id"] == "req-12345678"
    assert line["tenant_id"] == str(tenant)
    assert line["actor"] == "user:42"
    assert line["path"] == "/api/v1/members"


def test_secrets_never_reach_a_log() -> None:
    line = _format(
        {
            "password": "Tea-leaf-2026",
            "payload": {"new_password": "x1", "client_secret": "y2", "ok": 1},
            "authorization": "Bearer abc",
            "csrf_token": "zzz",
        }
    )
    text = json.dumps(line)
    for secret in ("Tea-leaf-2026", "x1", "y2", "Bearer abc", "zzz"):
        assert secret not in text
    assert line["payload"] == {"new_password": "***", "client_secret": "***", "ok": 1}
