"""What the run page's fields ask of the server while a person fills them in (with scripts): a
photo uploaded on its own (with its progress, and a retry when the signal drops), the members a
user field's type-ahead finds, the records a record link's search finds.

Each calls the service that owns the thing (files, accounts, records) in the viewer's workspace:
another workspace's run is a 404 here as on the run page, and a search sees only this workspace's
members and records. Without scripts none of this is needed: the form posts its files and its
choices (a plain list of members or records) with the step.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.files import service as files
from services.http import read_upload
from services.records import service as records
from services.sops.procedures import service as procedures
from services.sops.procedures.flow import ROLE_LABELS
from services.sops.runs import service
from services.sops.runs.run_pages import MAX_FORM_BYTES
from services.sops.runs.run_views import link_target
from services.web.i18n import translate
from services.web.pages import page
from services.web.viewer import Viewer

#: A search answers at most this many matches (a type-ahead narrows, it does not page).
MATCHES = 10
#: The field a list of matches picks for: the id of its control (``field-<name>``).
_FIELD_ID = re.compile(r"field-[a-z0-9_]{1,80}")


def _field_id(raw: str | None) -> str:
    return raw if raw and _FIELD_ID.fullmatch(raw) else "field-choice"


def _results(viewer: Viewer, field_id: str, query: str, matches: list[tuple[str, str, str]]) -> Template:
    """The matches of a type-ahead as buttons that pick a value (id, label, what tells it apart)."""
    return page(viewer, "sops/_pick_results.html", field_id=field_id, query=query, matches=matches)


class RunInputs(Controller):
    include_in_schema = False
    path = "/runs/{run_id:uuid}"

    @post("/uploads", status_code=201, request_max_body_size=MAX_FORM_BYTES)
    async def upload(
        self,
        run_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
    ) -> Response[dict[str, str]]:
        """One file of the run's form or evidence (multipart, field ``file``), saved by the files
        service as the API saves an upload; the form then sends its id with the step."""
        await service.get_run(db, run_id)  # 404 for another workspace's run
        name, content_type, data = await read_upload(request)
        saved = await files.save_file(
            db,
            tenant_id=member.member.require_tenant(),
            name=name,
            content_type=content_type,
            data=data,
            uploaded_by=member.member.user_id,
        )
        thumbnail = f"/files/{saved.id}/thumbnail" if saved.content_type.startswith("image/") else ""
        return Response({"id": str(saved.id), "name": saved.name, "thumbnail": thumbnail}, status_code=201)

    @get("/members")
    async def find_members(
        self,
        run_id: FromPath[uuid.UUID],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        q: FromQuery[str] = "",
        for_field: FromQuery[str | None] = None,
    ) -> Template:
        """The workspace's members whose name or email holds ``q``: name and role."""
        await service.get_run(db, run_id)
        rows = await accounts.search_members(db, member.member, q[:100], limit=MATCHES)
        matches = [
            (str(row.user_id), row.display_name, translate(ROLE_LABELS.get(row.role, row.role), member.locale))
            for row in rows
        ]
        return _results(member, _field_id(for_field), q, matches)

    @get("/records")
    async def find_records(
        self,
        run_id: FromPath[uuid.UUID],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        field: FromQuery[str] = "",
        q: FromQuery[str] = "",
        for_field: FromQuery[str | None] = None,
    ) -> Template:
        """The records a record-link field of the run may point at whose words hold ``q``: title
        and key field."""
        run = await service.get_run(db, run_id)
        version = await procedures.version_by_id(db, run.version_id)
        target = await link_target(db, run, version.definition, field)
        found = await records.search_records(db, target, q[:100], limit=MATCHES) if target else []
        matches = [
            (str(m.id), m.title or "—", f"{m.key_label} {m.key_value}" if m.key_label and m.key_value else "")
            for m in found
        ]
        return _results(member, _field_id(for_field), q, matches)


PAGES = [RunInputs]
