"""Platform tables that name a tenant without being tenant-owned: ``auth_sessions`` (the workspace a
login session works in), ``plugin_publishers`` and ``plugin_listings`` (the workspace that publishes
a plugin). No lock scopes them by tenant, so each API that reads them is shown here to keep to the
caller's own workspace: tenant B neither sees nor acts on tenant A's rows through them.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from services.marketplace import service as marketplace
from tests.conftest import PASSWORD, Api, World, deliver_events, mail_to, token_from, unique_email


async def _session(api: Api) -> dict[str, Any]:
    answer = await api.get("/api/v1/auth/session")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def _join(owner: Api, joiner: Api, email: str, role: str) -> None:
    """``email`` joins ``owner``'s workspace with ``role``, accepting on ``joiner`` (signed in, or
    not yet: then the account is made)."""
    invited = await owner.post("/api/v1/invitations", {"email": email, "role": role})
    assert invited.status_code == 201, invited.text
    await deliver_events()
    body = {"token": token_from(mail_to(email, "invitation")[-1])}
    if joiner.csrf is None:
        body |= {"display_name": "Wang Fang", "password": PASSWORD}
    accepted = await joiner.post("/api/v1/auth/accept-invitation", body)
    assert accepted.status_code == 200, accepted.text


async def _sign_in(world: World, email: str, tenant_id: str) -> Api:
    api = await world.client()
    signed_in = await api.post("/api/v1/auth/login", {"email": email, "password": PASSWORD})
    assert signed_in.status_code == 200, signed_in.text
    switched = await api.post("/api/v1/auth/switch-tenant", {"tenant_id": tenant_id})
    assert switched.status_code == 200, switched.text
    return api


async def test_a_login_session_stays_in_its_own_workspace(world: World) -> None:
    a_owner, a = await world.signup(company_name="Ningbo Porcelain Works")
    b_owner, b = await world.signup()
    a_id, b_id = a["tenant"]["id"], b["tenant"]["id"]

    # B's owner cannot move a session into A's workspace: A exists, but B's owner is no member.
    refused = await b_owner.post("/api/v1/auth/switch-tenant", {"tenant_id": a_id})
    assert refused.status_code == 404, refused.text
    session = await _session(b_owner)
    assert session["tenant"]["id"] == b_id
    assert [w["tenant"]["id"] for w in session["workspaces"]] == [b_id]
    assert a_id not in str(session) and a["user"]["email"] not in str(session)
    assert (await b_owner.get("/api/v1/members")).json()[0]["email"] == b["user"]["email"]

    # One person, a manager in both workspaces, signed in twice: once working in A, once in B.
    email = unique_email("both")
    joiner = await world.client()
    await _join(a_owner, joiner, email, "manager")
    await _join(b_owner, joiner, email, "manager")
    in_a, in_b = await _sign_in(world, email, a_id), await _sign_in(world, email, b_id)
    user_id = (await _session(in_a))["user"]["id"]
    assert ((await _session(in_a))["role"], (await _session(in_b))["role"]) == ("manager", "manager")

    # B's owner demotes, then removes, that person in B: the login session working in A keeps
    # A's role and workspace; only the one working in B follows B's changes.
    demoted = await b_owner.patch(f"/api/v1/members/{user_id}", {"role": "member"})
    assert demoted.status_code == 200, demoted.text
    assert ((await _session(in_a))["role"], (await _session(in_b))["role"]) == ("manager", "member")
    removed = await b_owner.delete(f"/api/v1/members/{user_id}")
    assert removed.status_code == 204, removed.text
    still = await _session(in_a)
    assert (still["tenant"]["id"], still["role"]) == (a_id, "manager")
    assert [w["tenant"]["id"] for w in still["workspaces"]] == [a_id]
    # A manager's write in A still goes through on the session working in A.
    procedure = await in_a.post(
        "/api/v1/procedures",
        {
            "key": "still_manager",
            "title": "Still a manager",
            "definition": {
                "start": "a",
                "steps": [{"kind": "task", "key": "a", "title": "A", "owner": {"kind": "starter"}}],
            },
        },
    )
    assert procedure.status_code == 201, procedure.text
    # The session that worked in B works in no workspace now: it reads none of B's rows.
    left = await in_b.get("/api/v1/members")
    assert (left.status_code, left.json()["code"]) == (403, "no_tenant_selected")
    assert (await _session(in_b))["tenant"] is None
    # Signing out in B ends that session alone.
    assert (await in_b.post("/api/v1/auth/logout")).status_code == 204
    assert (await _session(in_a))["tenant"]["id"] == a_id
    assert len((await a_owner.get("/api/v1/members")).json()) == 2


@dataclasses.dataclass
class Publishing:
    admin: Api
    a: Api
    b: Api
    a_tenant: str
    b_tenant: str
    suffix: str


@pytest.fixture
def platform_admin_email(world: World) -> Iterator[str]:
    email = unique_email("platform-admin")
    marketplace.configure(dataclasses.replace(world.settings, platform_admins=(email,)))
    try:
        yield email
    finally:
        marketplace.configure(world.settings)


@pytest.fixture
async def publishing(world: World, platform_admin_email: str) -> Publishing:
    """Two workspaces with the publisher flag, given by a platform admin."""
    admin, _ = await world.signup(email=platform_admin_email)
    await deliver_events()
    verified = await admin.post(
        "/api/v1/auth/verify-email", {"token": token_from(mail_to(platform_admin_email, "verify_email")[-1])}
    )
    assert verified.status_code == 200, verified.text
    assert (await admin.post("/api/v1/auth/reauthenticate", {"password": PASSWORD})).status_code == 200
    suffix = uuid.uuid4().hex[:6]
    a, a_body = await world.signup(company_name="Ningbo Porcelain Works")
    b, b_body = await world.signup()
    for body, name in ((a_body, f"Porcelain {suffix}"), (b_body, f"Tea {suffix}")):
        granted = await admin.post("/api/v1/admin/publishers", {"tenant_id": body["tenant"]["id"], "name": name})
        assert granted.status_code == 201, granted.text
    return Publishing(admin, a, b, a_body["tenant"]["id"], b_body["tenant"]["id"], suffix)


def _manifest(name: str, version: str) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "publisher": "Porcelain Works",
        "summary": {"zh-CN": "订舱", "en": "Booking"},
        "category": "logistics",
        "api_range": ">=1.0,<2.0",
        "pricing": "free",
        "scopes": [],
        "settings_schema": None,
        "kind": "remote",
        "endpoint": "https://plugins.example.com/booking",
        "actions": [
            {
                "name": "book",
                "labels": {"zh-CN": "订舱", "en": "Book"},
                "input_schema": {"type": "object"},
                "output_schema": {"type": "object"},
                "time_limit_ms": 1_000,
            }
        ],
        "triggers": [],
    }


async def _submissions(api: Api) -> list[tuple[str, str, str]]:
    listed = await api.get("/api/v1/publisher/plugins")
    assert listed.status_code == 200, listed.text
    return sorted((s["plugin"], s["version"], s["status"]) for s in listed.json())


async def test_a_publisher_sees_and_claims_only_its_own_listings(publishing: Publishing) -> None:
    p = publishing
    a_plugin, b_plugin = f"porcelain-{p.suffix}", f"tea-{p.suffix}"
    for api, name in ((p.a, a_plugin), (p.b, b_plugin)):
        submitted = await api.post("/api/v1/publisher/plugins/remote", {"manifest": _manifest(name, "1.0.0")})
        assert submitted.status_code == 201, submitted.text
    assert await _submissions(p.a) == [(a_plugin, "1.0.0", "pending")]
    assert await _submissions(p.b) == [(b_plugin, "1.0.0", "pending")]

    # B submitting a version of A's plugin: the name is A's listing, refused; nothing of A's changes.
    for version in ("1.0.1", "1.0.0"):
        taken = await p.b.post("/api/v1/publisher/plugins/remote", {"manifest": _manifest(a_plugin, version)})
        assert taken.status_code == 409, taken.text
        assert taken.json()["code"] == "plugin_name_taken"
    assert await _submissions(p.a) == [(a_plugin, "1.0.0", "pending")]
    assert await _submissions(p.b) == [(b_plugin, "1.0.0", "pending")]
    awaiting = (await p.admin.get("/api/v1/admin/plugin-versions")).json()
    assert sorted((s["plugin"], s["version"]) for s in awaiting if s["plugin"] in (a_plugin, b_plugin)) == [
        (a_plugin, "1.0.0"),
        (b_plugin, "1.0.0"),
    ]

    # A listing awaiting review is nobody's to see or install in the catalog, B's included.
    catalog = await p.b.get("/api/v1/marketplace/plugins")
    assert a_plugin not in catalog.text and b_plugin not in catalog.text
    assert (await p.b.get(f"/api/v1/marketplace/plugins/{a_plugin}")).status_code == 404
    install = await p.b.post(f"/api/v1/plugins/{a_plugin}/install", {"scopes": [], "config": {}})
    assert install.status_code == 404, install.text

    # A publisher's name is its workspace's: giving B the name A publishes under is refused.
    reused = await p.admin.post("/api/v1/admin/publishers", {"tenant_id": p.b_tenant, "name": f"Porcelain {p.suffix}"})
    assert reused.status_code == 409 and reused.json()["code"] == "publisher_name_taken", reused.text

    # The review queue and a submission's source are the platform admin's: a publisher gets 404.
    for api in (p.a, p.b):
        assert (await api.get("/api/v1/admin/plugin-versions")).status_code == 404
        source = await api.get(f"/api/v1/admin/plugin-versions/{a_plugin}/1.0.0/source")
        assert source.status_code == 404
