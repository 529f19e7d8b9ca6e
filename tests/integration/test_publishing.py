"""Publishing and remote plugins: a publisher submits, checks run, a platform admin reviews, tenants
install approved versions; remote actions are signed, and bad answers fail clearly."""

from __future__ import annotations

import dataclasses
import io
import tarfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import httpx
import pytest

from services.automation.actions import PermanentActionError, RetryableActionError
from services.marketplace import service as marketplace
from services.marketplace.actors import CHECKS_QUEUE
from services.marketplace.scaffolding import new_plugin
from tests.conftest import PASSWORD, Api, World, deliver_events, mail_to, token_from, unique_email
from tests.integration.test_automation_actions import _run
from tests.plugin_support import RemotePluginServer, answer


@dataclasses.dataclass
class Platform:
    world: World
    admin_email: str
    publisher_name: str
    plugin: str  # a plugin name of this test's own (the catalog is shared by the whole run)

    async def signup(self, **overrides: Any) -> tuple[Api, dict[str, Any]]:
        return await self.world.signup(**overrides)


@pytest.fixture
def platform(world: World) -> Iterator[Platform]:
    """The world with a platform admin, and plain http allowed to the test's local plugin services."""
    admin_email = unique_email("platform-admin")
    marketplace.configure(
        dataclasses.replace(world.settings, platform_admins=(admin_email,), plugin_allow_http_hosts=("127.0.0.1",))
    )
    try:
        suffix = uuid.uuid4().hex[:6]
        yield Platform(world, admin_email, f"Ship Co {suffix}", f"shipper-{suffix}")
    finally:
        marketplace.configure(world.settings)


def remote_manifest(name: str, version: str, endpoint: str, **overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": name,
        "version": version,
        "publisher": "Shipping Partner",
        "summary": {"zh-CN": "订舱与追踪", "en": "Booking and tracking"},
        "category": "logistics",
        "api_range": ">=1.0,<2.0",
        "pricing": "free",
        "scopes": [],
        "settings_schema": None,
        "kind": "remote",
        "endpoint": endpoint,
        "actions": [
            {
                "name": "book",
                "labels": {"zh-CN": "订舱", "en": "Book"},
                "input_schema": {"type": "object", "properties": {"port": {"type": "string"}}, "required": ["port"]},
                "output_schema": {
                    "type": "object",
                    "properties": {"booking": {"type": "string"}},
                    "required": ["booking"],
                },
                "time_limit_ms": 1_000,
            }
        ],
        "triggers": [],
    }
    document.update(overrides)
    return document


async def confirm_admin(admin: Api, email: str) -> None:
    """What a platform admin does before sensitive actions: verify the address, confirm the password."""
    await deliver_events()
    token = token_from(mail_to(email, "verify_email")[-1])
    assert (await admin.post("/api/v1/auth/verify-email", {"token": token})).status_code == 200
    confirmed = await admin.post("/api/v1/auth/reauthenticate", {"password": PASSWORD})
    assert confirmed.status_code == 200, confirmed.text


async def _publisher_and_admin(platform: Platform) -> tuple[Api, Api, str]:
    publisher, body = await platform.signup()
    admin, _ = await platform.signup(email=platform.admin_email)
    await confirm_admin(admin, platform.admin_email)
    not_yet = await publisher.post("/api/v1/publisher/plugins/remote", {"manifest": {}})
    assert not_yet.status_code == 403 and not_yet.json()["code"] == "not_a_publisher"
    grant = {"tenant_id": body["tenant"]["id"], "name": platform.publisher_name}
    hidden = await publisher.post("/api/v1/admin/publishers", grant)
    assert hidden.status_code == 404  # the admin API does not exist for others
    granted = await admin.post("/api/v1/admin/publishers", grant)
    assert granted.status_code == 201, granted.text
    return publisher, admin, body["tenant"]["id"]


async def test_remote_plugin_from_submission_to_a_signed_call(platform: Platform) -> None:
    publisher, admin, _ = await _publisher_and_admin(platform)
    name = platform.plugin
    bookings: list[dict[str, Any]] = []

    def book(request: dict[str, Any]) -> Any:
        bookings.append(request)
        port = request["input"]["port"]
        if port == "garbage":
            return 200, b"<html>oops</html>", {}
        if port == "busy":
            return answer(503, {"error": {"message": "overloaded"}}, {"Retry-After": "7"})
        if port == "off-schema":
            return answer(200, {"output": {"ticket": 1}})
        if port == "slow":
            time.sleep(1.5)
        return answer(200, {"output": {"booking": f"BK-{port}"}})

    with RemotePluginServer("unknown-yet", {"book": book}) as server:
        bad = await publisher.post(
            "/api/v1/publisher/plugins/remote",
            {"manifest": remote_manifest(name, "1.0", "ftp://x", summary={"en": "only"})},
        )
        assert bad.status_code == 422, bad.text
        pointers = {p["pointer"] for p in bad.json()["errors"]}
        assert {"/manifest/version", "/manifest/summary/zh-CN", "/manifest/endpoint"} <= pointers, pointers

        submitted = await publisher.post(
            "/api/v1/publisher/plugins/remote", {"manifest": remote_manifest(name, "1.0.0", server.endpoint)}
        )
        assert submitted.status_code == 201, submitted.text
        assert submitted.json()["submission"]["status"] == "pending"
        server.secret = submitted.json()["signing_secret"].encode()
        again = await publisher.post(
            "/api/v1/publisher/plugins/remote", {"manifest": remote_manifest(name, "1.0.0", server.endpoint)}
        )
        assert again.status_code == 409 and again.json()["code"] == "version_exists"

        tenant, tenant_body = await platform.signup()
        tenant_id = tenant_body["tenant"]["id"]
        listed_names = [p["name"] for p in (await tenant.get("/api/v1/marketplace/plugins")).json()]
        assert name not in listed_names  # not listed before review
        pending = (await admin.get("/api/v1/admin/plugin-versions")).json()
        assert [p["version"] for p in pending if p["plugin"] == name] == ["1.0.0"]
        no_reason = await admin.post(f"/api/v1/admin/plugin-versions/{name}/1.0.0/reject", {"reason": " "})
        assert no_reason.status_code == 422
        approved = await admin.post(f"/api/v1/admin/plugin-versions/{name}/1.0.0/approve")
        assert approved.status_code == 200 and approved.json()["status"] == "approved"

        listed = (await tenant.get("/api/v1/marketplace/plugins?category=logistics")).json()
        assert [(p["publisher"], p["kind"]) for p in listed if p["name"] == name] == [
            (platform.publisher_name, "remote")
        ]
        assert (await tenant.post(f"/api/v1/plugins/{name}/install", {"scopes": []})).status_code == 201

        config = {"plugin": name, "action": "book", "input": {"port": "Ningbo"}}
        assert await _run(tenant_id, "plugin", config) == {"booking": "BK-Ningbo"}
        assert bookings[-1]["tenant_id"] == tenant_id and bookings[-1]["idempotency_key"].endswith(":0")
        assert server.refused == []

        # Replaying the exact request the host sent is refused by the plugin's service.
        headers, body = server.received[-1]
        async with httpx.AsyncClient() as client:
            replay = await client.post(server.endpoint + "/actions/book", content=body, headers=headers)
        assert replay.status_code == 401 and server.refused == ["replayed"]

        with pytest.raises(PermanentActionError, match="does not match its schema") as bad_input:
            await _run(tenant_id, "plugin", {**config, "input": {"harbour": "x"}})  # the declared input schema
        assert bad_input.value.follow_up is None  # the input's fault, not the plugin's
        with pytest.raises(PermanentActionError, match="without a JSON object") as garbage:
            await _run(tenant_id, "plugin", {**config, "input": {"port": "garbage"}})
        assert garbage.value.follow_up is not None  # counted toward the circuit breaker
        with pytest.raises(PermanentActionError, match=r"output of shipper-\w+\.book does not match"):
            await _run(tenant_id, "plugin", {**config, "input": {"port": "off-schema"}})
        with pytest.raises(RetryableActionError, match="overloaded") as busy:
            await _run(tenant_id, "plugin", {**config, "input": {"port": "busy"}})
        assert busy.value.retry_after == 7
        with pytest.raises(RetryableActionError, match="longer than 1 s"):
            await _run(tenant_id, "plugin", {**config, "input": {"port": "slow"}})

        # A service that checks with another key (a forged or stale key): a clear, permanent refusal.
        server.secret = b"another-key"
        with pytest.raises(PermanentActionError, match="answered 401"):
            await _run(tenant_id, "plugin", config)
        assert server.refused[-1] == "bad_signature"

        # A newer approved version: the tenant sees the upgrade.
        newer = await publisher.post(
            "/api/v1/publisher/plugins/remote", {"manifest": remote_manifest(name, "1.1.0", server.endpoint)}
        )
        assert newer.status_code == 201
        assert (await tenant.get(f"/api/v1/plugins/{name}")).json()["upgrade_available"] is None
        await admin.post(f"/api/v1/admin/plugin-versions/{name}/1.1.0/approve")
        assert (await tenant.get(f"/api/v1/plugins/{name}")).json()["upgrade_available"] == "1.1.0"
        mine = (await publisher.get("/api/v1/publisher/plugins")).json()
        assert [(s["version"], s["status"]) for s in mine] == [("1.1.0", "approved"), ("1.0.0", "approved")]

    other, _ = await platform.signup()
    await admin.post(
        "/api/v1/admin/publishers", {"tenant_id": (await other.get("/api/v1/tenant")).json()["id"], "name": "Other"}
    )
    taken = await other.post(
        "/api/v1/publisher/plugins/remote", {"manifest": remote_manifest(name, "9.0.0", "https://x.example")}
    )
    assert taken.status_code == 409 and taken.json()["code"] == "plugin_name_taken"


def _sdist(source: Path) -> bytes:
    """A source distribution of ``source`` (what ``uv build --sdist`` makes: one top directory)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(source.rglob("*")):
            if "__pycache__" in path.parts or ".pytest_cache" in path.parts:
                continue
            archive.add(path, arcname=f"{source.name}-0.1.0/{path.relative_to(source)}", recursive=False)
    return buffer.getvalue()


def _wheel(source: Path) -> bytes:
    """A wheel of the scaffolded plugin at ``source`` that carries its tests (as hatchling would
    lay it out: the package at the top, its metadata in ``.dist-info``)."""
    name = source.name
    package = name.replace("-", "_")
    info = f"{package}-0.1.0.dist-info"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        for path in sorted((source / "src").rglob("*.py")):
            wheel.write(path, path.relative_to(source / "src").as_posix())
        for path in sorted((source / "tests").rglob("*.py")):
            wheel.write(path, path.relative_to(source).as_posix())
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
        wheel.writestr(f"{info}/entry_points.txt", f"[guiju]\n{name} = {package}.plugin\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    return buffer.getvalue()


async def test_source_submissions_are_checked_in_a_worker_then_reviewed(platform: Platform, tmp_path: Path) -> None:
    publisher, admin, _ = await _publisher_and_admin(platform)
    good_name, bad_name = f"{platform.plugin}-alerts", f"{platform.plugin}-leaky"
    wheel_name = f"{platform.plugin}-wheel"
    good = new_plugin(good_name, tmp_path / "good", publisher=platform.publisher_name)
    bad = new_plugin(bad_name, tmp_path / "bad", publisher=platform.publisher_name)
    wheeled = new_plugin(wheel_name, tmp_path / "wheel", publisher=platform.publisher_name)
    plugin_py = next(bad.rglob("plugin.py"))
    plugin_py.write_text("from services.db import database  # reaches into the host\n" + plugin_py.read_text())

    for root in (good, bad):
        upload = await publisher.post(
            "/api/v1/publisher/plugins/source",
            files={"file": (f"{root.name}-0.1.0.tar.gz", _sdist(root), "application/gzip")},
        )
        assert upload.status_code == 201, upload.text
        assert upload.json()["status"] == "checking"
    as_wheel = await publisher.post(
        "/api/v1/publisher/plugins/source",
        files={"file": (f"{wheel_name.replace('-', '_')}-0.1.0-py3-none-any.whl", _wheel(wheeled), "application/zip")},
    )
    assert as_wheel.status_code == 201, as_wheel.text
    not_sdist = await publisher.post("/api/v1/publisher/plugins/source", files={"file": ("x.zip", b"PK", "a/b")})
    assert not_sdist.status_code == 422 and not_sdist.json()["code"] == "invalid_source"

    await deliver_events()
    await _join_checks()
    mine = {s["plugin"]: s for s in (await publisher.get("/api/v1/publisher/plugins")).json()}
    assert mine[good_name]["status"] == "pending", mine[good_name]["check_report"]
    assert [c["name"] for c in mine[good_name]["check_report"]["checks"] if c["ok"]] == [
        "manifest",
        "api_range",
        "hooks",
        "imports",
        "tests",
    ]
    assert mine[wheel_name]["status"] == "pending", mine[wheel_name]["check_report"]
    assert mine[bad_name]["status"] == "rejected"
    imports = next(c for c in mine[bad_name]["check_report"]["checks"] if c["name"] == "imports")
    assert not imports["ok"] and "plugin.py" in imports["details"][0]

    approved = await admin.post(f"/api/v1/admin/plugin-versions/{good_name}/{mine[good_name]['version']}/approve")
    assert approved.status_code == 200
    source = await admin.get(f"/api/v1/admin/plugin-versions/{good_name}/{mine[good_name]['version']}/source")
    assert source.status_code == 200 and source.content[:2] == b"\x1f\x8b"

    # Approved, but its code is not deployed here: listed, and honest that it cannot be installed yet.
    tenant, _ = await platform.signup()
    listing = (await tenant.get(f"/api/v1/marketplace/plugins/{good_name}")).json()
    assert listing["versions"][0]["available"] is False
    refused = await tenant.post(f"/api/v1/plugins/{good_name}/install", {"scopes": listing["scopes"]})
    assert refused.status_code == 409 and refused.json()["code"] == "plugin_version_unavailable"


async def _join_checks() -> None:
    import asyncio

    await asyncio.to_thread(dramatiq.get_broker().join, CHECKS_QUEUE, timeout=300_000)
