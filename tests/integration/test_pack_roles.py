"""Pack roles and people: an invitation carries the pack roles its invitee will hold, accepting it
gives them (the open steps that waited for nobody go to them, and new runs too), a role is handed
over or taken back, an invitation is mailed again; and another workspace sees and changes none of it."""

from __future__ import annotations

from typing import Any

from tests.conftest import PASSWORD, World, deliver_events, mail_to, token_from, unique_email

PACK = "general-starter"
LEAD = f"{PACK}:team_lead"
PROCEDURE = "weekly_review_meeting"  # its first step is the team lead's


async def _installed(api: Any) -> str:
    """Install the pack with every role left to nobody; the id of its weekly review procedure."""
    installed = await api.post(f"/api/v1/templates/{PACK}/install", {"roles": {}, "samples": False})
    assert installed.status_code == 201, installed.text
    return str(next(i["object_id"] for i in installed.json()["items"] if i["key"] == PROCEDURE))


async def _first_step(api: Any, procedure_id: str) -> dict[str, Any]:
    started = await api.post("/api/v1/runs", {"procedure_id": procedure_id})
    assert started.status_code == 201, started.text
    run = started.json()
    return dict(next(s for s in run["steps"] if s["status"] == "ready")) | {"run_id": run["id"]}


async def _holders(api: Any) -> dict[str, str | None]:
    answer = await api.get("/api/v1/pack-roles")
    assert answer.status_code == 200, answer.text
    return {r["key"]: r["user_id"] for r in answer.json()}


async def test_an_invitee_holds_the_pack_roles_of_their_invitation_once_they_join(world: World) -> None:
    owner, body = await world.signup()
    procedure_id = await _installed(owner)
    waiting = await _first_step(owner, procedure_id)
    assert waiting["assignee_id"] is None  # nobody holds the role yet
    assert (await _holders(owner))[LEAD] is None

    email = unique_email("lead")
    refused = await owner.post(
        "/api/v1/invitations", {"email": email, "pack_roles": [LEAD, f"{PACK}:nobody", "no-such-pack:x"]}
    )
    assert refused.status_code == 422
    assert [(e["pointer"], e["code"]) for e in refused.json()["errors"]] == [
        ("/pack_roles/1", "unknown_pack_role"),
        ("/pack_roles/2", "unknown_pack_role"),
    ]
    invited = await owner.post("/api/v1/invitations", {"email": email, "pack_roles": [LEAD]})
    assert invited.status_code == 201, invited.text
    assert invited.json()["pack_roles"] == [LEAD]
    assert [i["pack_roles"] for i in (await owner.get("/api/v1/invitations")).json()] == [[LEAD]]

    # Mailed again: a new link, and the first one no longer works.
    await deliver_events()
    first_token = token_from(mail_to(email, "invitation")[-1])
    resent = await owner.post(f"/api/v1/invitations/{invited.json()['id']}/resend")
    assert resent.status_code == 200, resent.text
    await deliver_events()
    token = token_from(mail_to(email, "invitation")[-1])
    assert token != first_token
    joiner = await world.client()
    stale = await joiner.post(
        "/api/v1/auth/accept-invitation", {"token": first_token, "display_name": "Zhao Liu", "password": PASSWORD}
    )
    assert stale.json()["code"] == "token_invalid"
    accepted = await joiner.post(
        "/api/v1/auth/accept-invitation", {"token": token, "display_name": "Zhao Liu", "password": PASSWORD}
    )
    assert accepted.status_code == 200, accepted.text
    lead_id = accepted.json()["user"]["id"]
    assert (await _holders(owner))[LEAD] == lead_id

    # The step that waited for nobody is theirs now, and so is the same step of a new run.
    tasks = (await joiner.get("/api/v1/my/tasks", params={"include_claimable": "false"})).json()["items"]
    mine = {(t["run_id"], t["step_id"]) for t in tasks}
    assert (waiting["run_id"], waiting["id"]) in mine
    assert (await _first_step(owner, procedure_id))["assignee_id"] == lead_id

    # Handed over to the owner, then to nobody: new runs follow.
    owner_id = body["user"]["id"]
    assert (await owner.request("PUT", f"/api/v1/pack-roles/{LEAD}", {"user_id": owner_id})).status_code == 204
    assert (await _first_step(owner, procedure_id))["assignee_id"] == owner_id
    assert (await owner.request("PUT", f"/api/v1/pack-roles/{LEAD}", {"user_id": None})).status_code == 204
    assert (await _holders(owner))[LEAD] is None
    assert (await _first_step(owner, procedure_id))["assignee_id"] is None


async def test_a_pack_role_goes_only_to_a_member_and_only_an_admin_hands_it_over(world: World) -> None:
    owner, _ = await world.signup()
    await _installed(owner)
    _stranger, other = await world.signup()
    not_member = await owner.request("PUT", f"/api/v1/pack-roles/{LEAD}", {"user_id": other["user"]["id"]})
    assert not_member.status_code == 422
    assert [e["code"] for e in not_member.json()["errors"]] == ["not_a_member"]
    unknown = await owner.request("PUT", f"/api/v1/pack-roles/{PACK}:nobody", {"user_id": None})
    assert (unknown.status_code, unknown.json()["code"]) == (404, "pack_role_not_found")
    member, member_id = await world.invite_and_join(owner, "member")
    refused = await member.request("PUT", f"/api/v1/pack-roles/{LEAD}", {"user_id": member_id})
    assert (refused.status_code, refused.json()["code"]) == (403, "role_required")
    assert (await member.get("/api/v1/pack-roles")).status_code == 403


async def test_another_workspace_sees_and_changes_none_of_the_pack_roles_and_invitations(world: World) -> None:
    owner, _ = await world.signup()
    await _installed(owner)
    invited = (await owner.post("/api/v1/invitations", {"email": unique_email("x"), "pack_roles": [LEAD]})).json()
    _member, member_id = await world.invite_and_join(owner, "member")
    assert (await owner.request("PUT", f"/api/v1/pack-roles/{LEAD}", {"user_id": member_id})).status_code == 204

    intruder, _ = await world.signup()
    assert await _holders(intruder) == {}
    assert (await intruder.get("/api/v1/invitations")).json() == []
    assert member_id not in {m["user_id"] for m in (await intruder.get("/api/v1/members")).json()}
    for method, path, body in (
        ("PUT", f"/api/v1/pack-roles/{LEAD}", {"user_id": member_id}),
        ("POST", f"/api/v1/invitations/{invited['id']}/resend", None),
        ("DELETE", f"/api/v1/invitations/{invited['id']}", None),
        ("PATCH", f"/api/v1/members/{member_id}", {"role": "admin"}),
        ("DELETE", f"/api/v1/members/{member_id}", None),
    ):
        answer = await intruder.request(method, path, body)
        assert answer.status_code == 404, (path, answer.text)
    assert (await _holders(owner))[LEAD] == member_id
    assert [i["id"] for i in (await owner.get("/api/v1/invitations")).json()] == [invited["id"]]
