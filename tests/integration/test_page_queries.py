"""What a page costs the database: the statements My tasks and the dashboard send, counted.

Every signed-in page reads its viewer (person, workspace and the navigation's counts, the bell's
unread notices among them) in one statement after the session's; the bell never costs a round
trip of its own. My tasks reads its cards and the counts of every view in two more statements.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from services.db import open_session
from services.notifications import service as notifications
from tests.conftest import World, deliver_events, mail_to, token_from
from tests.integration.test_task_pages import _flow, cards, page, publish, start


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements sent while the block runs, in order (every engine of the process)."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(" ".join(statement.split()))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def reads(statement: str, table: str) -> bool:
    return re.search(rf"\bFROM {table}\b", statement, re.IGNORECASE) is not None


def plan_settings(sent: list[str]) -> int:
    return sum(s.startswith("set local plan_cache_mode") for s in sent)


def _bell(sent: list[str]) -> None:
    """The unread notices are counted in the statement that reads the viewer, and nowhere else."""
    counting = [s for s in sent if reads(s, "notifications") and "count(" in s.lower()]
    assert len(counting) == 1, counting
    assert reads(counting[0], "users") and "tenants" in counting[0], counting[0]


async def test_a_page_reads_the_bell_with_its_viewer(world: World) -> None:
    owner, signed = await world.signup()
    procedure = await publish(owner, _flow("pack", "ship", due_minutes=60), "Order fulfilment")
    for number in range(3):
        await start(owner, procedure, f"A{number}")
    tenant_id, user_id = uuid.UUID(signed["tenant"]["id"]), uuid.UUID(signed["user"]["id"])
    async with open_session(tenant_id) as db:
        for n in range(2):
            await notifications.notify(db, [user_id], f"Notice {n}", link="/tasks")
    postgres = world.backend.name == "postgres"
    await page(owner, "/tasks")  # the published definition is read once, then kept
    await page(owner, "/app")

    with statements() as sent:
        html = await page(owner, "/tasks")
    assert len(cards(html)) == 3 and 'aria-label="Notifications (2 unread)"' in html
    _bell(sent)
    # the session, the viewer, [the plan setting,] the cards, the counts of every view
    assert len(sent) == (5 if postgres else 4), sent
    assert plan_settings(sent) == (1 if postgres else 0)

    with statements() as sent:
        html = await page(owner, "/app")
    assert 'aria-label="Notifications (2 unread)"' in html and "Notice 1" in html
    _bell(sent)
    # the session, the viewer, the procedures and their versions, [the plan setting, once,] the
    # counts, the runs in flight, the open problems, the unread notices listed
    assert len(sent) == (9 if postgres else 8), sent
    assert plan_settings(sent) == (1 if postgres else 0)

    with statements() as sent:
        bell = await owner.get("/notifications/bell")
    assert bell.status_code == 200 and 'aria-label="Notifications (2 unread)"' in bell.text
    _bell(sent)
    assert len(sent) == 2, sent  # the session, the viewer


async def test_the_bell_counts_the_workspace_worked_in(world: World) -> None:
    """A person in two workspaces sees, on each, the unread notices of that workspace alone."""
    first_owner, first = await world.signup(company_name="First Co")
    second_owner, second = await world.signup(company_name="Second Co")
    joiner, joiner_id = await world.invite_and_join(second_owner)
    joiner_email = (await joiner.get("/api/v1/auth/session")).json()["user"]["email"]
    invite = await first_owner.post("/api/v1/invitations", {"email": joiner_email, "role": "member"})
    assert invite.status_code == 201, invite.text
    await deliver_events()
    token = token_from(mail_to(joiner_email, "invitation")[-1])
    assert (await joiner.post("/api/v1/auth/accept-invitation", {"token": token})).status_code == 200
    for tenant, count in ((first, 1), (second, 3)):
        async with open_session(uuid.UUID(tenant["tenant"]["id"])) as db:
            for n in range(count):
                await notifications.notify(db, [uuid.UUID(joiner_id)], f"Notice {n}", link="/tasks")

    assert 'aria-label="Notifications (1 unread)"' in await page(joiner, "/tasks")
    switched = await joiner.post("/api/v1/auth/switch-tenant", {"tenant_id": second["tenant"]["id"]})
    assert switched.status_code == 200, switched.text
    assert 'aria-label="Notifications (3 unread)"' in await page(joiner, "/tasks")
    assert 'aria-label="Notifications (3 unread)"' in (await joiner.get("/notifications/bell")).text
