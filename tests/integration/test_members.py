"""Invitations, members, roles and the last-owner rule."""

from __future__ import annotations

from typing import Any

from tests.conftest import PASSWORD, World, deliver_events, mail_to, token_from, unique_email


async def test_invitation_flow_for_a_new_person(world: World) -> None:
    owner, body = await world.signup()
    email = unique_email("wang")
    invited = await owner.post("/api/v1/invitations", {"email": email, "role": "manager"})
    assert invited.status_code == 201
    pending = (await owner.get("/api/v1/invitations")).json()
    assert [p["email"] for p in pending] == [email]
    await deliver_events()
    mail = mail_to(email, "invitation")[-1]
    assert body["tenant"]["name"] in mail.subject

    joiner = await world.client()
    incomplete = await joiner.post("/api/v1/auth/accept-invitation", {"token": token_from(mail)})
    assert incomplete.status_code == 422
    assert {e["pointer"] for e in incomplete.json()["errors"]} == {"/display_name", "/password"}
    accepted = await joiner.post(
        "/api/v1/auth/accept-invitation", {"token": token_from(mail), "display_name": "Wang Fang", "password": PASSWORD}
    )
    assert accepted.status_code == 200
    assert accepted.json()["role"] == "manager"
    assert accepted.json()["user"]["email_verified"] is True
    again = await (await world.client()).post(
        "/api/v1/auth/accept-invitation", {"token": token_from(mail), "display_name": "X", "password": PASSWORD}
    )
    assert again.json()["code"] == "token_used"
    members = (await owner.get("/api/v1/members")).json()
    assert {(m["email"], m["role"]) for m in members} == {(body["user"]["email"], "owner"), (email, "manager")}
    assert (await owner.get("/api/v1/invitations")).json() == []


async def test_existing_account_must_sign_in_to_accept(world: World) -> None:
    owner, _ = await world.signup()
    _other_owner, other = await world.signup()
    await owner.post("/api/v1/invitations", {"email": other["user"]["email"]})
    await deliver_events()
    token = token_from(mail_to(other["user"]["email"], "invitation")[-1])
    anonymous = await world.client()
    response = await anonymous.post(
        "/api/v1/auth/accept-invitation", {"token": token, "display_name": "Hijack", "password": PASSWORD}
    )
    assert response.status_code == 401
    assert response.json()["code"] == "sign_in_to_accept"


async def test_invitation_to_another_address_cannot_be_taken(world: World) -> None:
    owner, _ = await world.signup()
    intruder, _ = await world.signup()
    email = unique_email("guest")
    await owner.post("/api/v1/invitations", {"email": email})
    await deliver_events()
    token = token_from(mail_to(email, "invitation")[-1])
    response = await intruder.post("/api/v1/auth/accept-invitation", {"token": token})
    assert response.status_code == 403
    assert response.json()["code"] == "invitation_email_mismatch"


async def test_revoked_and_forged_invitations_are_refused(world: World) -> None:
    owner, body = await world.signup()
    email = unique_email("revoked")
    invitation = (await owner.post("/api/v1/invitations", {"email": email})).json()
    await deliver_events()
    token = token_from(mail_to(email, "invitation")[-1])
    assert (await owner.delete(f"/api/v1/invitations/{invitation['id']}")).status_code == 204
    assert (await owner.get("/api/v1/invitations")).json() == []
    joiner = await world.client()
    revoked = await joiner.post(
        "/api/v1/auth/accept-invitation", {"token": token, "display_name": "Z", "password": PASSWORD}
    )
    assert revoked.json()["code"] == "token_invalid"
    forged = f"{body['tenant']['id'].replace('-', '')}.{'A' * 43}"
    assert (await joiner.post("/api/v1/auth/accept-invitation", {"token": forged})).json()["code"] == "token_invalid"
    assert (await joiner.post("/api/v1/auth/accept-invitation", {"token": "junk"})).json()["code"] == "token_invalid"


async def _roles(api: Any) -> dict[str, str]:
    """The workspace's members as user id → role."""
    listed = await api.get("/api/v1/members")
    assert listed.status_code == 200, listed.text
    return {m["user_id"]: m["role"] for m in listed.json()}


async def test_roles_gate_member_management(world: World) -> None:
    owner, body = await world.signup()
    manager, manager_id = await world.invite_and_join(owner, "manager")
    member, member_id = await world.invite_and_join(owner, "member")
    owner_id = body["user"]["id"]

    for api in (manager, member):
        response = await api.post("/api/v1/invitations", {"email": unique_email()})
        assert response.status_code == 403
        assert response.json()["code"] == "role_required"
        assert (await api.patch(f"/api/v1/members/{member_id}", {"role": "admin"})).status_code == 403
    assert (await member.get("/api/v1/members")).status_code == 200
    assert await _roles(owner) == {owner_id: "owner", manager_id: "manager", member_id: "member"}
    assert (await owner.get("/api/v1/invitations")).json() == []  # the refused invitations made none

    promoted = await owner.patch(f"/api/v1/members/{manager_id}", {"role": "admin"})
    assert promoted.json()["role"] == "admin"
    assert (await _roles(member))[manager_id] == "admin"
    # The promotion takes effect on the member's existing session at once.
    assert (await manager.get("/api/v1/auth/session")).json()["role"] == "admin"
    admin = manager
    denied = await admin.patch(f"/api/v1/members/{member_id}", {"role": "owner"})
    assert denied.json()["code"] == "owner_required"
    assert (await admin.patch(f"/api/v1/members/{member_id}", {"role": "wizard"})).status_code == 422
    assert (await _roles(owner))[member_id] == "member"

    assert (await admin.delete(f"/api/v1/members/{member_id}")).status_code == 204
    assert (await member.get("/api/v1/members")).json()["code"] == "no_tenant_selected"
    assert await _roles(owner) == {owner_id: "owner", manager_id: "admin"}


async def test_the_last_owner_stays(world: World) -> None:
    owner, body = await world.signup()
    owner_id = body["user"]["id"]
    demote = await owner.patch(f"/api/v1/members/{owner_id}", {"role": "admin"})
    assert demote.status_code == 409
    assert demote.json()["code"] == "last_owner"
    leave = await owner.delete(f"/api/v1/members/{owner_id}")
    assert leave.json()["code"] == "last_owner"
    assert await _roles(owner) == {owner_id: "owner"}

    second, second_id = await world.invite_and_join(owner, "owner")
    assert (await second.delete(f"/api/v1/members/{owner_id}")).status_code == 204
    assert (await second.delete(f"/api/v1/members/{second_id}")).json()["code"] == "last_owner"
    assert await _roles(second) == {second_id: "owner"}


async def test_duplicate_and_invalid_invitations(world: World) -> None:
    owner, body = await world.signup()
    self_invite = await owner.post("/api/v1/invitations", {"email": body["user"]["email"]})
    assert self_invite.json()["code"] == "already_member"
    bad = await owner.post("/api/v1/invitations", {"email": "not an email", "role": "boss"})
    assert bad.status_code == 422
    assert {e["code"] for e in bad.json()["errors"]} == {"invalid_email", "unknown_role"}
    assert (await owner.get("/api/v1/invitations")).json() == []
    email = unique_email("twice")
    await owner.post("/api/v1/invitations", {"email": email})
    await owner.post("/api/v1/invitations", {"email": email})
    assert [i["email"] for i in (await owner.get("/api/v1/invitations")).json()] == [email]


async def test_workspace_settings_and_entities(world: World) -> None:
    owner, _ = await world.signup()
    patched = await owner.patch("/api/v1/tenant", {"name": "规矩贸易", "timezone": "Europe/Berlin", "locale": "zh-CN"})
    assert patched.status_code == 200
    assert patched.json()["timezone"] == "Europe/Berlin"
    stored = (await owner.get("/api/v1/tenant")).json()
    assert (stored["name"], stored["timezone"], stored["locale"]) == ("规矩贸易", "Europe/Berlin", "zh-CN")
    bad = await owner.patch("/api/v1/tenant", {"timezone": "Nowhere/City", "locale": "de"})
    assert {e["code"] for e in bad.json()["errors"]} == {"unknown_timezone", "unknown_locale"}
    assert (await owner.get("/api/v1/tenant")).json() == stored

    created = await owner.post("/api/v1/entities", {"name": "Lagos Trading Ltd", "country": "NG", "currency": "NGN"})
    assert created.status_code == 201
    entity_id = created.json()["id"]
    assert (await owner.get(f"/api/v1/entities/{entity_id}")).json()["currency"] == "NGN"
    dup = await owner.post("/api/v1/entities", {"name": "Lagos Trading Ltd"})
    assert dup.json()["code"] == "entity_name_taken"
    assert [e["name"] for e in (await owner.get("/api/v1/entities")).json()].count("Lagos Trading Ltd") == 1
    assert len((await owner.get("/api/v1/entities")).json()) == 2
