"""OAuth 2 through the running app, driven by Authlib's own httpx client: the code flow with PKCE
and the consent form, client credentials, refresh rotation, revocation and introspection; then
each attack refused with its own error, and tenant isolation of apps, tokens and data."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlalchemy import update

from services.db import database
from services.oauth.models import OAuthToken
from tenants.base import utcnow
from tenants.context import system_scope
from tests.conftest import ENGLISH, Api, World, variant

BASE = "https://guiju.test"
CALLBACK = "https://erp.example/callback"
AUTHORIZE = f"{BASE}/oauth/authorize"
TOKEN = f"{BASE}/oauth/token"


async def https_client(world: World) -> Api:
    """A client of the app over https (OAuth refuses plain http outside loopback)."""
    transport = httpx.ASGITransport(app=world.app, raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url=BASE, headers=ENGLISH)
    world._clients.append(client)
    return Api(client)


async def signup(world: World, **overrides: Any) -> tuple[Api, dict[str, Any]]:
    from tests.conftest import signup_body

    api = await https_client(world)
    answer = await api.post("/api/v1/auth/signup", signup_body(**overrides))
    assert answer.status_code == 201, answer.text
    return api, answer.json()


def oauth_client(world: World, client_id: str, secret: str | None = None, **kwargs: Any) -> AsyncOAuth2Client:
    transport = httpx.ASGITransport(app=world.app, raise_app_exceptions=False)
    return AsyncOAuth2Client(
        client_id=client_id,
        client_secret=secret,
        redirect_uri=CALLBACK,
        code_challenge_method="S256",
        transport=transport,
        token_endpoint_auth_method="client_secret_basic" if secret else "none",
        **kwargs,
    )


async def register(owner: Api, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": "Kingdee Sync",
        "publisher": "Partner Soft Ltd",
        "kind": "confidential",
        "redirect_uris": [CALLBACK],
        "scopes": ["records:read", "records:write", "runs:read", "members:read"],
        "service_role": "member",
    } | overrides
    answer = await owner.post("/api/v1/oauth/clients", body)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def _hidden_fields(html: str) -> dict[str, str]:
    fields = {}
    for match in re.finditer(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html):
        fields[match.group(1)] = unescape(match.group(2))
    return fields


async def consent(person: Api, url: str, *, decision: str = "allow", tenant_id: str | None = None) -> str:
    """Open the consent page at ``url`` as ``person`` and answer it; returns where the app is sent."""
    shown = await person.get(url)
    assert shown.status_code == 200, shown.text
    form = _hidden_fields(shown.text)
    form["decision"] = decision
    if tenant_id:
        form["tenant_id"] = tenant_id
    else:
        form["tenant_id"] = re.search(r'name="tenant_id" value="([^"]+)"[^>]*checked', shown.text).group(1)  # type: ignore[union-attr]
    answer = await person.client.post("/oauth/authorize", data=form, headers={"Origin": BASE, "Host": "guiju.test"})
    assert answer.status_code in (302, 303), answer.text
    return str(answer.headers["location"])


@dataclass
class Connected:
    owner: Api
    signup: dict[str, Any]
    app: dict[str, Any]
    secret: str
    token: dict[str, Any]
    client: AsyncOAuth2Client


async def connect(world: World, scope: str = "records:read records:write runs:read") -> Connected:
    owner, signed = await signup(world)
    registered = await register(owner)
    client = oauth_client(world, registered["client"]["client_id"], registered["client_secret"], scope=scope)
    verifier = secrets.token_urlsafe(48)
    url, state = client.create_authorization_url(AUTHORIZE, code_verifier=verifier)
    location = await consent(owner, url)
    assert location.startswith(CALLBACK)
    assert parse_qs(urlsplit(location).query)["state"] == [state]
    token = await client.fetch_token(TOKEN, authorization_response=location, code_verifier=verifier)
    return Connected(owner, signed, registered["client"], registered["client_secret"], dict(token), client)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------- the flows


async def test_the_code_flow_with_pkce_gives_a_scoped_token_bound_to_one_workspace(world: World) -> None:
    connected = await connect(world)
    token = connected.token
    assert token["token_type"].lower() == "bearer"
    assert token["expires_in"] == world.settings.oauth_access_token_minutes * 60
    assert token["refresh_token"] and token["scope"] == "records:read records:write runs:read"

    # Authlib's client sends the token; the API answers as for the owner, in their workspace.
    listed = await connected.client.get(f"{BASE}/api/v1/collections", headers=ENGLISH)
    assert listed.status_code == 200, listed.text
    assert listed.headers["RateLimit-Limit"] and int(listed.headers["RateLimit-Remaining"]) >= 0
    created = await connected.client.post(
        f"{BASE}/api/v1/collections",
        json={"key": "suppliers", "name": "Suppliers", "fields": [{"key": "name", "label": "Name", "type": "text"}]},
        headers=ENGLISH,
    )
    assert created.status_code == 201, created.text

    # A scope it was not given: refused, and the answer names the scope.
    members = await connected.client.get(f"{BASE}/api/v1/members", headers=ENGLISH)
    assert members.status_code == 403, members.text
    assert members.json()["code"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in members.headers["WWW-Authenticate"]
    # A route no token may use (the session's own business).
    session = await connected.client.get(f"{BASE}/api/v1/auth/session", headers=ENGLISH)
    assert session.status_code == 403 and session.json()["code"] == "token_not_accepted"
    # Without a token at all, or with a made-up one.
    fake = await connected.owner.client.get("/api/v1/collections", headers=bearer("gjat_made-up"))
    assert fake.status_code == 401 and fake.json()["code"] == "invalid_token"


async def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_family(world: World) -> None:
    connected = await connect(world)
    first = connected.token
    second = await connected.client.refresh_token(TOKEN, refresh_token=first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"] and second["access_token"] != first["access_token"]
    api = connected.owner.client
    assert (await api.get("/api/v1/collections", headers=bearer(second["access_token"]))).status_code == 200
    # The old access token ended with the rotation.
    assert (await api.get("/api/v1/collections", headers=bearer(first["access_token"]))).status_code == 401

    # The old refresh token again: refused, and every token of the family with it.
    replay = await api.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        auth=(connected.app["client_id"], connected.secret),
    )
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert (await api.get("/api/v1/collections", headers=bearer(second["access_token"]))).status_code == 401
    again = await api.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]},
        auth=(connected.app["client_id"], connected.secret),
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


async def test_scope_escalation_is_refused(world: World) -> None:
    connected = await connect(world, scope="records:read")
    api = connected.owner.client
    wider = await api.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": connected.token["refresh_token"],
            "scope": "records:read records:write",
        },
        auth=(connected.app["client_id"], connected.secret),
    )
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"
    # Asking at the authorization endpoint for a scope the app was not registered for.
    client = oauth_client(world, connected.app["client_id"], connected.secret, scope="audit:read")
    url, _state = client.create_authorization_url(AUTHORIZE, code_verifier=secrets.token_urlsafe(48))
    refused = await connected.owner.get(url)
    assert refused.status_code in (302, 303)
    assert parse_qs(urlsplit(refused.headers["location"]).query)["error"] == ["invalid_scope"]


async def test_client_credentials_act_as_the_apps_own_identity(world: World) -> None:
    owner, _signed = await signup(world)
    registered = await register(owner)
    client = oauth_client(world, registered["client"]["client_id"], registered["client_secret"], scope="records:read")
    token = await client.fetch_token(TOKEN, grant_type="client_credentials")
    assert "refresh_token" not in token
    listed = await client.get(f"{BASE}/api/v1/collections", headers=ENGLISH)
    assert listed.status_code == 200, listed.text
    # The app's role (member) cannot hold what only admins can.
    too_much = oauth_client(world, registered["client"]["client_id"], registered["client_secret"], scope="audit:read")
    with pytest.raises(Exception, match="invalid_scope"):
        await too_much.fetch_token(TOKEN, grant_type="client_credentials")
    # A public app has no secret and so no client credentials.
    public = await register(owner, kind="public", service_role=None, name="Desk script")
    assert public["client_secret"] is None


async def test_revocation_and_introspection(world: World) -> None:
    connected = await connect(world)
    api = connected.owner.client
    auth = (connected.app["client_id"], connected.secret)
    active = await api.post("/oauth/introspect", data={"token": connected.token["access_token"]}, auth=auth)
    assert active.status_code == 200, active.text
    body = active.json()
    assert body["active"] is True and body["scope"] == connected.token["scope"]
    assert body["client_id"] == connected.app["client_id"] and body["tenant_id"] == connected.signup["tenant"]["id"]

    revoked = await api.post(
        "/oauth/revoke", data={"token": connected.token["refresh_token"], "token_type_hint": "refresh_token"}, auth=auth
    )
    assert revoked.status_code == 200, revoked.text
    assert (await api.get("/api/v1/collections", headers=bearer(connected.token["access_token"]))).status_code == 401
    inactive = await api.post("/oauth/introspect", data={"token": connected.token["access_token"]}, auth=auth)
    assert inactive.json() == {"active": False}


async def test_the_servers_metadata(world: World) -> None:
    api = await https_client(world)
    answer = await api.get("/.well-known/oauth-authorization-server")
    assert answer.status_code == 200
    document = answer.json()
    issuer = world.settings.base_url.rstrip("/") or BASE
    assert document["issuer"] == issuer and document["token_endpoint"] == f"{issuer}/oauth/token"
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert "records:read" in document["scopes_supported"]


# ---------------------------------------------------------------- refused, each with its error


async def test_a_redirect_uri_that_is_not_registered_exactly_is_refused_on_the_page(world: World) -> None:
    owner, _signed = await signup(world)
    registered = await register(owner)
    client = oauth_client(world, registered["client"]["client_id"], registered["client_secret"], scope="records:read")
    client.redirect_uri = CALLBACK + "/../evil"
    url, _state = client.create_authorization_url(AUTHORIZE, code_verifier=secrets.token_urlsafe(48))
    answer = await owner.get(url)
    # Never sent to an address the app did not register: the person sees the refusal.
    assert answer.status_code == 400 and "location" not in answer.headers


async def test_pkce_is_required_of_public_apps_and_checked(world: World) -> None:
    owner, _signed = await signup(world)
    public = await register(owner, kind="public", service_role=None)
    client_id = public["client"]["client_id"]
    # No challenge from a public app: refused back to the app.
    no_pkce = await owner.get(
        f"/oauth/authorize?response_type=code&client_id={client_id}&redirect_uri={CALLBACK}&scope=records:read&state=s1"
    )
    assert no_pkce.status_code in (302, 303)
    assert parse_qs(urlsplit(no_pkce.headers["location"]).query)["error"] == ["invalid_request"]
    # The plain method is not accepted either.
    plain = await owner.get(
        f"/oauth/authorize?response_type=code&client_id={client_id}&redirect_uri={CALLBACK}&scope=records:read"
        "&code_challenge=abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrs&code_challenge_method=plain"
    )
    assert parse_qs(urlsplit(plain.headers["location"]).query)["error"] == ["invalid_request"]

    client = oauth_client(world, client_id, scope="records:read")
    verifier = secrets.token_urlsafe(48)
    url, _state = client.create_authorization_url(AUTHORIZE, code_verifier=verifier)
    location = await consent(owner, url)
    code = parse_qs(urlsplit(location).query)["code"][0]
    api = owner.client
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK, "client_id": client_id}
    missing = await api.post("/oauth/token", data=form)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    # A wrong verifier spends the code (it was presented), and the right one then finds it used.
    wrong = await api.post("/oauth/token", data=form | {"code_verifier": secrets.token_urlsafe(48)})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert create_s256_code_challenge(verifier) in url


async def test_a_reused_code_is_refused_and_revokes_what_it_issued(world: World) -> None:
    owner, _signed = await signup(world)
    registered = await register(owner)
    client = oauth_client(world, registered["client"]["client_id"], registered["client_secret"], scope="records:read")
    verifier = secrets.token_urlsafe(48)
    url, _state = client.create_authorization_url(AUTHORIZE, code_verifier=verifier)
    location = await consent(owner, url)
    token = await client.fetch_token(TOKEN, authorization_response=location, code_verifier=verifier)
    api = owner.client
    assert (await api.get("/api/v1/collections", headers=bearer(token["access_token"]))).status_code == 200
    code = parse_qs(urlsplit(location).query)["code"][0]
    replay = await api.post(
        "/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK, "code_verifier": verifier},
        auth=(registered["client"]["client_id"], registered["client_secret"]),
    )
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert (await api.get("/api/v1/collections", headers=bearer(token["access_token"]))).status_code == 401


async def test_an_expired_token_is_refused(world: World) -> None:
    connected = await connect(world)
    async with database().session() as session, session.begin():
        with system_scope():
            await session.execute(update(OAuthToken).values(access_expires_at=utcnow() - timedelta(seconds=1)))
    answer = await connected.owner.client.get("/api/v1/collections", headers=bearer(connected.token["access_token"]))
    assert answer.status_code == 401 and answer.json()["code"] == "invalid_token"


async def test_a_denied_consent_tells_the_app(world: World) -> None:
    owner, _signed = await signup(world)
    registered = await register(owner)
    client = oauth_client(world, registered["client"]["client_id"], registered["client_secret"], scope="records:read")
    url, state = client.create_authorization_url(AUTHORIZE, code_verifier=secrets.token_urlsafe(48))
    location = await consent(owner, url, decision="deny")
    query = parse_qs(urlsplit(location).query)
    assert query["error"] == ["access_denied"] and query["state"] == [state]


async def test_a_removed_members_admin_token_stops_working(world: World) -> None:
    owner, signed = await signup(world)
    admin_api, admin_id = await world.invite_and_join(owner, role="admin")
    admin = await https_client(world)
    admin.client.cookies = admin_api.client.cookies
    admin.csrf = admin_api.csrf
    token = await admin.post(
        "/api/v1/personal-tokens", {"name": "nightly export", "scopes": ["members:read"], "expires_in_days": 30}
    )
    assert token.status_code == 201, token.text
    raw = token.json()["access_token"]
    assert (await admin.client.get("/api/v1/members", headers=bearer(raw))).status_code == 200
    removed = await owner.delete(f"/api/v1/members/{admin_id}")
    assert removed.status_code == 204, removed.text
    after = await owner.client.get("/api/v1/members", headers=bearer(raw))
    assert after.status_code == 401 and after.json()["code"] == "invalid_token"
    assert signed["tenant"]["id"]


async def test_a_token_follows_its_persons_role(world: World) -> None:
    owner, _signed = await signup(world)
    admin_api, admin_id = await world.invite_and_join(owner, role="admin")
    made = await admin_api.post("/api/v1/personal-tokens", {"name": "invites", "scopes": ["members:write"]})
    assert made.status_code == 201, made.text
    headers = bearer(made.json()["access_token"])
    invite = {"email": "new.hire@example.com", "role": "member"}
    assert (await owner.client.post("/api/v1/invitations", json=invite, headers=headers)).status_code == 201
    # Made a member: the token keeps its scope, but the role no longer allows inviting.
    demoted = await owner.patch(f"/api/v1/members/{admin_id}", {"role": "member"})
    assert demoted.status_code == 200, demoted.text
    again = await owner.client.post(
        "/api/v1/invitations", json=invite | {"email": "second@example.com"}, headers=headers
    )
    assert again.status_code == 403 and again.json()["code"] == "role_required"


async def test_a_personal_token_cannot_exceed_its_owners_role(world: World) -> None:
    owner, _signed = await signup(world)
    member_api, _member_id = await world.invite_and_join(owner, role="member")
    refused = await member_api.post(
        "/api/v1/personal-tokens", {"name": "script", "scopes": ["audit:read", "webhooks:manage"]}
    )
    assert refused.status_code == 422, refused.text
    assert [e["code"] for e in refused.json()["errors"]] == ["scope_above_role", "scope_above_role"]


async def test_rate_limits_per_app_answer_429_with_retry_after(world: World) -> None:
    limited = variant(world, api_client_limits="3/minute")
    connected = await connect(limited)
    api = connected.owner.client
    codes = [
        (await api.get("/api/v1/collections", headers=bearer(connected.token["access_token"]))).status_code
        for _ in range(4)
    ]
    assert codes == [200, 200, 200, 429]
    last = await api.get("/api/v1/collections", headers=bearer(connected.token["access_token"]))
    assert last.json()["code"] == "api_rate_limited"
    assert int(last.headers["Retry-After"]) >= 1 and last.headers["RateLimit-Remaining"] == "0"


# ---------------------------------------------------------------- tenants never see each other


async def test_tenant_a_token_on_tenant_b_ids_is_404_and_apps_stay_in_their_workspace(world: World) -> None:
    a = await connect(world)
    b_owner, _b = await signup(world)
    b_collection = await b_owner.post(
        "/api/v1/collections",
        {"key": "secrets", "name": "Secrets", "fields": [{"key": "name", "label": "Name", "type": "text"}]},
    )
    assert b_collection.status_code == 201, b_collection.text
    b_id = b_collection.json()["id"]
    answer = await a.owner.client.get(f"/api/v1/collections/{b_id}", headers=bearer(a.token["access_token"]))
    assert answer.status_code == 404
    # B's admin neither sees nor changes A's app, nor disconnects it from A.
    assert (await b_owner.get("/api/v1/oauth/clients")).json() == []
    for method, path in [
        ("GET", f"/api/v1/oauth/clients/{a.app['id']}"),
        ("PATCH", f"/api/v1/oauth/clients/{a.app['id']}"),
        ("POST", f"/api/v1/oauth/clients/{a.app['id']}/rotate-secret"),
        ("DELETE", f"/api/v1/oauth/clients/{a.app['id']}"),
        ("DELETE", f"/api/v1/oauth/connected-apps/{a.app['id']}"),
    ]:
        refused = await b_owner.request(method, path, json={} if method == "PATCH" else None)
        assert refused.status_code == 404, (method, path, refused.text)
    assert (await b_owner.get("/api/v1/oauth/connected-apps")).json() == []
    # A sees its own connected app and disconnects it: the token stops working.
    connected = (await a.owner.get("/api/v1/oauth/connected-apps")).json()
    assert [app["client_id"] for app in connected] == [a.app["client_id"]]
    assert (await a.owner.delete(f"/api/v1/oauth/connected-apps/{a.app['id']}")).status_code == 204
    after = await a.owner.client.get("/api/v1/collections", headers=bearer(a.token["access_token"]))
    assert after.status_code == 401


async def test_a_rotated_secret_replaces_the_old_one(world: World) -> None:
    owner, _signed = await signup(world)
    registered = await register(owner)
    rotated = await owner.post(f"/api/v1/oauth/clients/{registered['client']['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["client_secret"]
    assert new_secret != registered["client_secret"]
    old = oauth_client(world, registered["client"]["client_id"], registered["client_secret"], scope="records:read")
    with pytest.raises(Exception, match="invalid_client"):
        await old.fetch_token(TOKEN, grant_type="client_credentials")
    new = oauth_client(world, registered["client"]["client_id"], new_secret, scope="records:read")
    assert (await new.fetch_token(TOKEN, grant_type="client_credentials"))["access_token"]
    # The audit log keeps who registered and rotated it.
    listed = await owner.get("/api/v1/audit")
    assert listed.status_code == 200, listed.text
    events = listed.json()["items"]
    actions = {event["action"] for event in events}
    assert {"oauth_client.registered", "oauth_client.secret_rotated"} <= actions


async def test_a_token_subscribes_to_webhooks_only_for_events_its_scopes_read(world: World) -> None:
    owner, _signed = await signup(world)
    made = await owner.post(
        "/api/v1/personal-tokens", {"name": "event relay", "scopes": ["webhooks:manage", "runs:read"]}
    )
    assert made.status_code == 201, made.text
    headers = bearer(made.json()["access_token"])
    api = owner.client
    body = {"url": "https://1.1.1.1/hooks", "enabled": False}
    runs = await api.post("/api/v1/webhooks", json=body | {"event_types": ["run.completed"]}, headers=headers)
    assert runs.status_code == 201, runs.text
    records = await api.post("/api/v1/webhooks", json=body | {"event_types": ["record.created"]}, headers=headers)
    assert records.status_code == 422, records.text
    # Without webhooks:manage, the route itself is closed to the token.
    reader = await owner.post("/api/v1/personal-tokens", {"name": "reader", "scopes": ["runs:read"]})
    listed = await api.get("/api/v1/webhooks", headers=bearer(reader.json()["access_token"]))
    assert listed.status_code == 403 and listed.json()["code"] == "insufficient_scope"
