"""The procedures service: versioned SOP definitions, their validation on publish, and acknowledgements.

Functions take a session in the caller's transaction and never commit. A procedure starts with a
draft v1; a draft is edited until it is published (validated first: every problem is listed); a
published version never changes, and a new draft starts from the latest version.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.accounts import service as accounts
from services.audit import service as audit
from services.marketplace import service as marketplace
from services.names import clean_name, name_problems
from services.outbox import service as outbox
from services.records import service as records
from services.sops.definition import (
    HUMAN_STEPS,
    ActionStep,
    ApprovalStep,
    Definition,
    MemberOwner,
    Owner,
    Step,
    SubprocedureStep,
)
from services.sops.procedures import validation
from services.sops.procedures.models import Acknowledgement, Procedure, ProcedureVersion, VersionStatus
from services.sops.procedures.schemas import (
    DiffOut,
    StepChangeOut,
    ValueChangeOut,
)
from services.sops.procedures.schemas import (
    DraftIn as DraftIn,
)
from services.sops.procedures.schemas import (
    ProcedureIn as ProcedureIn,
)
from services.sops.procedures.schemas import (
    ProcedurePatch as ProcedurePatch,
)
from services.sops.procedures.schemas import (
    PublishIn as PublishIn,
)
from services.sops.procedures.validation import ValidationContext
from services.validation import check
from tenants.base import new_id, utcnow
from tenants.errors import Conflict, FieldProblem, NotFound, ValidationProblem
from tenants.models import Role
from tenants.principal import Principal


class PublishedVersion(msgspec.Struct, frozen=True):
    """What a run needs of a published version: its definition and the procedure's current facts."""

    procedure_id: uuid.UUID
    version_id: uuid.UUID
    number: int
    definition: Definition
    collection_id: uuid.UUID | None
    owner_id: uuid.UUID
    title: str


# ---------------------------------------------------------------- definitions, cached

# Published definitions never change, so a decoded one can be kept by version id (ids are unique
# across tenants, and a tenant's session can only have read its own rows to fill it).
_DEFINITION_CACHE_SIZE = 512
_definitions: OrderedDict[uuid.UUID, Definition] = OrderedDict()


def _cached_definition(version_id: uuid.UUID, raw: Any) -> Definition:
    definition = _definitions.get(version_id)
    if definition is not None:
        _definitions.move_to_end(version_id)
        return definition
    definition = definition_from_json(raw)
    _definitions[version_id] = definition
    if len(_definitions) > _DEFINITION_CACHE_SIZE:
        _definitions.popitem(last=False)
    return definition


def definition_from_json(raw: Any) -> Definition:
    """A stored definition (JSON builtins) as a :class:`Definition`."""
    return msgspec.convert(raw, type=Definition)


def definition_to_json(definition: Definition) -> dict[str, Any]:
    built: dict[str, Any] = msgspec.to_builtins(definition)
    return built


# ---------------------------------------------------------------- what runs use

_PUBLISHED_COLUMNS = (
    ProcedureVersion.id,
    ProcedureVersion.number,
    Procedure.id.label("procedure_id"),
    Procedure.collection_id,
    Procedure.owner_id,
    Procedure.title,
)


async def _published(db: AsyncSession, row: Any) -> PublishedVersion:
    definition = _definitions.get(row.id)
    if definition is None:
        raw = await db.scalar(select(ProcedureVersion.definition).where(ProcedureVersion.id == row.id))
        definition = _cached_definition(row.id, raw)
    else:
        _definitions.move_to_end(row.id)
    return PublishedVersion(
        procedure_id=row.procedure_id,
        version_id=row.id,
        number=row.number,
        definition=definition,
        collection_id=row.collection_id,
        owner_id=row.owner_id,
        title=row.title,
    )


async def version_for_run(db: AsyncSession, procedure_id: uuid.UUID) -> PublishedVersion:
    """The latest published version of a procedure: 404 if unknown, 409 if none is published yet."""
    procedure = (await db.execute(select(Procedure.archived_at).where(Procedure.id == procedure_id))).first()
    if procedure is None:
        raise NotFound("No such procedure.", code="procedure_not_found")
    if procedure.archived_at is not None:
        raise Conflict("The procedure is archived: it starts no new runs.", code="procedure_archived")
    row = (
        await db.execute(
            select(*_PUBLISHED_COLUMNS)
            .join(Procedure, Procedure.id == ProcedureVersion.procedure_id)
            .where(ProcedureVersion.procedure_id == procedure_id, ProcedureVersion.status == VersionStatus.PUBLISHED)
            .order_by(ProcedureVersion.number.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        raise Conflict("The procedure has no published version yet.", code="procedure_not_published")
    return await _published(db, row)


async def version_by_id(db: AsyncSession, version_id: uuid.UUID) -> PublishedVersion:
    """A published version by its id (a run keeps the version it started on); 404 if unknown or a draft."""
    row = (
        await db.execute(
            select(*_PUBLISHED_COLUMNS)
            .join(Procedure, Procedure.id == ProcedureVersion.procedure_id)
            .where(ProcedureVersion.id == version_id, ProcedureVersion.status == VersionStatus.PUBLISHED)
        )
    ).first()
    if row is None:
        raise NotFound("No such published version.", code="version_not_found")
    return await _published(db, row)


async def definition_by_version_id(db: AsyncSession, version_id: uuid.UUID) -> Definition:
    """The definition of a published version, for acting on a run of it: from the cache when it
    was read before (no statement), else read; 404 if unknown or a draft.

    The id must come from the caller's own tenant (a run's ``version_id``): a hit is not checked
    against the tenant, which is safe because only the tenant's own reads fill the cache.
    """
    definition = _definitions.get(version_id)
    if definition is not None:
        _definitions.move_to_end(version_id)
        return definition
    raw = await db.scalar(
        select(ProcedureVersion.definition).where(
            ProcedureVersion.id == version_id, ProcedureVersion.status == VersionStatus.PUBLISHED
        )
    )
    if raw is None:
        raise NotFound("No such published version.", code="version_not_found")
    return _cached_definition(version_id, raw)


async def has_acknowledged(db: AsyncSession, user_id: uuid.UUID, version_id: uuid.UUID) -> bool:
    """Whether the user confirmed reading this version."""
    found = await db.scalar(
        select(Acknowledgement.user_id).where(
            Acknowledgement.version_id == version_id, Acknowledgement.user_id == user_id
        )
    )
    return found is not None


# ---------------------------------------------------------------- procedures


@dataclass(frozen=True)
class ProcedureView:
    """A procedure with where its versions stand."""

    procedure: Procedure
    latest_published_version: int | None
    draft_version_id: uuid.UUID | None


async def _views(db: AsyncSession, procedures: list[Procedure]) -> list[ProcedureView]:
    ids = [p.id for p in procedures]
    if not ids:
        return []
    rows = (
        await db.execute(
            select(ProcedureVersion.procedure_id, ProcedureVersion.id, ProcedureVersion.number, ProcedureVersion.status)
            .where(ProcedureVersion.procedure_id.in_(ids))
            .order_by(ProcedureVersion.number)
        )
    ).all()
    latest: dict[uuid.UUID, int] = {}
    drafts: dict[uuid.UUID, uuid.UUID] = {}
    for row in rows:
        if row.status == VersionStatus.PUBLISHED:
            latest[row.procedure_id] = row.number
        else:
            drafts[row.procedure_id] = row.id
    return [ProcedureView(p, latest.get(p.id), drafts.get(p.id)) for p in procedures]


async def _view(db: AsyncSession, procedure: Procedure) -> ProcedureView:
    return (await _views(db, [procedure]))[0]


def _procedure_audit(procedure: Procedure) -> dict[str, Any]:
    return {
        "key": procedure.key,
        "title": procedure.title,
        "purpose": procedure.purpose,
        "metric": procedure.metric,
        "owner_id": procedure.owner_id,
        "collection_id": procedure.collection_id,
        "archived_at": procedure.archived_at,
    }


async def _procedure(db: AsyncSession, procedure_id: uuid.UUID, *, for_update: bool = False) -> Procedure:
    statement = select(Procedure).where(Procedure.id == procedure_id)
    if for_update:
        statement = statement.with_for_update()
    procedure = await db.scalar(statement)
    if procedure is None:
        raise NotFound("No such procedure.", code="procedure_not_found")
    return procedure


def _editable(procedure: Procedure) -> None:
    if procedure.archived_at is not None:
        raise Conflict("The procedure is archived: it can no longer be changed.", code="procedure_archived")


def _prefixed(problems: list[FieldProblem], prefix: str) -> list[FieldProblem]:
    return [p.moved(prefix + p.pointer) for p in problems]


async def _fact_problems(
    db: AsyncSession, owner_id: uuid.UUID | None, collection_id: uuid.UUID | None
) -> list[FieldProblem]:
    problems = []
    if owner_id is not None and not await accounts.existing_member_ids(db, {owner_id}):
        problems.append(FieldProblem("/owner_id", "unknown_member", "the owner must be a member of the workspace"))
    if collection_id is not None and await _collection_fields(db, collection_id) is None:
        problems.append(FieldProblem("/collection_id", "collection_not_found", "no such collection"))
    return problems


async def list_procedures(db: AsyncSession, principal: Principal, *, archived: bool = False) -> list[ProcedureView]:
    """The workspace's procedures by key (archived ones only when asked)."""
    principal.require_tenant()
    statement = select(Procedure).order_by(Procedure.key)
    statement = statement.where(Procedure.archived_at.is_not(None) if archived else Procedure.archived_at.is_(None))
    return await _views(db, list(await db.scalars(statement)))


async def get_procedure(db: AsyncSession, principal: Principal, procedure_id: uuid.UUID) -> ProcedureView:
    principal.require_tenant()
    return await _view(db, await _procedure(db, procedure_id))


async def create_procedure(db: AsyncSession, principal: Principal, data: ProcedureIn) -> ProcedureView:
    """A new procedure with its draft v1 (the definition must decode; it is checked fully on publish)."""
    principal.require_role(Role.MANAGER)
    owner_id = data.owner_id or principal.user_id
    problems = name_problems(data.title, "/title") + await _fact_problems(db, owner_id, data.collection_id)
    definition, decode_problems = validation.decode_definition(data.definition)
    problems += _prefixed(decode_problems, "/definition")
    check(problems)
    assert definition is not None
    if await db.scalar(select(Procedure.id).where(Procedure.key == data.key)):
        raise Conflict("A procedure with the key '{key}' already exists.", code="procedure_key_taken", key=data.key)
    procedure = Procedure(
        id=new_id(),
        key=data.key,
        title=clean_name(data.title),
        purpose=data.purpose,
        metric=data.metric,
        owner_id=owner_id,
        collection_id=data.collection_id,
        created_by=principal.user_id,
    )
    db.add(procedure)
    await db.flush()
    draft = ProcedureVersion(
        id=new_id(),
        procedure_id=procedure.id,
        number=1,
        status=VersionStatus.DRAFT,
        definition=definition_to_json(definition),
        created_by=principal.user_id,
    )
    db.add(draft)
    await db.flush()
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="procedure.created",
        subject_type="procedure",
        subject_id=procedure.id,
        after={**_procedure_audit(procedure), "draft_version_id": draft.id, "definition": draft.definition},
    )
    return ProcedureView(procedure, None, draft.id)


async def update_procedure(
    db: AsyncSession, principal: Principal, procedure_id: uuid.UUID, patch: ProcedurePatch
) -> ProcedureView:
    principal.require_role(Role.MANAGER)
    procedure = await _procedure(db, procedure_id, for_update=True)
    _editable(procedure)
    collection_id = None if isinstance(patch.collection_id, msgspec.UnsetType) else patch.collection_id
    title_problems = name_problems(patch.title, "/title") if patch.title is not None else []
    check(title_problems + await _fact_problems(db, patch.owner_id, collection_id))
    before = _procedure_audit(procedure)
    if patch.title is not None:
        procedure.title = clean_name(patch.title)
    if patch.purpose is not None:
        procedure.purpose = patch.purpose
    if not isinstance(patch.metric, msgspec.UnsetType):
        procedure.metric = patch.metric
    if patch.owner_id is not None:
        procedure.owner_id = patch.owner_id
    if not isinstance(patch.collection_id, msgspec.UnsetType):
        procedure.collection_id = patch.collection_id
    after = _procedure_audit(procedure)
    if after != before:
        procedure.updated_at = utcnow()
        await db.flush()
        await audit.record_change(
            db,
            actor_id=principal.user_id,
            action="procedure.updated",
            subject_type="procedure",
            subject_id=procedure.id,
            before=before,
            after=after,
        )
    return await _view(db, procedure)


async def archive_procedure(db: AsyncSession, principal: Principal, procedure_id: uuid.UUID) -> ProcedureView:
    """Archive a procedure: it starts no new runs and is no longer edited (runs under way go on)."""
    principal.require_role(Role.MANAGER)
    procedure = await _procedure(db, procedure_id, for_update=True)
    if procedure.archived_at is None:
        before = _procedure_audit(procedure)
        procedure.archived_at = utcnow()
        await db.flush()
        await audit.record_change(
            db,
            actor_id=principal.user_id,
            action="procedure.archived",
            subject_type="procedure",
            subject_id=procedure.id,
            before=before,
            after=_procedure_audit(procedure),
        )
    return await _view(db, procedure)


async def procedure_key_taken(db: AsyncSession, key: str) -> bool:
    return await db.scalar(select(Procedure.id).where(Procedure.key == key)) is not None


async def procedure_state(db: AsyncSession, procedure_id: uuid.UUID) -> tuple[dict[str, Any], uuid.UUID | None]:
    """A procedure as it stands: its facts and the definition of its newest version (the draft when
    there is one), and that draft's id."""
    procedure = await _procedure(db, procedure_id)
    latest = await db.scalar(
        select(ProcedureVersion)
        .where(ProcedureVersion.procedure_id == procedure_id)
        .order_by(ProcedureVersion.number.desc())
        .limit(1)
    )
    assert latest is not None  # a procedure is created with its v1
    state = {
        "title": procedure.title,
        "purpose": procedure.purpose,
        "metric": procedure.metric,
        "definition": latest.definition,
    }
    return state, latest.id if latest.status == VersionStatus.DRAFT else None


async def delete_procedure(db: AsyncSession, principal: Principal, procedure_id: uuid.UUID) -> None:
    """Delete a procedure that never ran (the caller checks the runs), with its versions."""
    principal.require_role(Role.ADMIN)
    procedure = await _procedure(db, procedure_id, for_update=True)
    before = _procedure_audit(procedure)
    version_ids = select(ProcedureVersion.id).where(ProcedureVersion.procedure_id == procedure_id)
    await db.execute(delete(Acknowledgement).where(Acknowledgement.version_id.in_(version_ids)))
    await db.execute(delete(ProcedureVersion).where(ProcedureVersion.procedure_id == procedure_id))
    await db.delete(procedure)
    await db.flush()
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="procedure.deleted",
        subject_type="procedure",
        subject_id=procedure_id,
        before=before,
    )


# ---------------------------------------------------------------- versions


async def _version(
    db: AsyncSession, procedure_id: uuid.UUID, version_id: uuid.UUID, *, for_update: bool = False
) -> ProcedureVersion:
    statement = select(ProcedureVersion).where(
        ProcedureVersion.id == version_id, ProcedureVersion.procedure_id == procedure_id
    )
    if for_update:
        statement = statement.with_for_update()
    version = await db.scalar(statement)
    if version is None:
        raise NotFound("No such version of this procedure.", code="version_not_found")
    return version


async def list_versions(db: AsyncSession, principal: Principal, procedure_id: uuid.UUID) -> list[ProcedureVersion]:
    """Every version, newest first, with who published it, when and why."""
    principal.require_tenant()
    await _procedure(db, procedure_id)
    statement = (
        select(ProcedureVersion)
        .where(ProcedureVersion.procedure_id == procedure_id)
        .order_by(ProcedureVersion.number.desc())
    )
    return list(await db.scalars(statement))


async def get_version(
    db: AsyncSession, principal: Principal, procedure_id: uuid.UUID, version_id: uuid.UUID
) -> ProcedureVersion:
    principal.require_tenant()
    return await _version(db, procedure_id, version_id)


def _draft_only(version: ProcedureVersion) -> None:
    if version.status != VersionStatus.DRAFT:
        raise Conflict(
            "Version {number} is published and never changes: start a new draft.",
            code="version_immutable",
            number=version.number,
        )


async def update_draft(
    db: AsyncSession, principal: Principal, procedure_id: uuid.UUID, version_id: uuid.UUID, data: DraftIn
) -> ProcedureVersion:
    """Replace a draft's definition (it must decode; it is checked fully on publish)."""
    principal.require_role(Role.MANAGER)
    _editable(await _procedure(db, procedure_id))
    version = await _version(db, procedure_id, version_id, for_update=True)
    _draft_only(version)
    definition, problems = validation.decode_definition(data.definition)
    check(_prefixed(problems, "/definition"))
    assert definition is not None
    before = version.definition
    version.definition = definition_to_json(definition)
    version.updated_at = utcnow()
    await db.flush()
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="procedure.draft_updated",
        subject_type="procedure",
        subject_id=procedure_id,
        before={"version_id": version.id, "number": version.number, "definition": before},
        after={"version_id": version.id, "number": version.number, "definition": version.definition},
    )
    return version


async def new_draft(db: AsyncSession, principal: Principal, procedure_id: uuid.UUID) -> ProcedureVersion:
    """A new draft starting from the latest version; 409 when a draft already exists."""
    principal.require_role(Role.MANAGER)
    procedure = await _procedure(db, procedure_id, for_update=True)
    _editable(procedure)
    latest = await db.scalar(
        select(ProcedureVersion)
        .where(ProcedureVersion.procedure_id == procedure_id)
        .order_by(ProcedureVersion.number.desc())
        .limit(1)
    )
    assert latest is not None  # a procedure is created with its v1
    if latest.status == VersionStatus.DRAFT:
        raise Conflict(
            "Version {number} is already a draft: edit it, or publish it first.",
            code="draft_exists",
            number=latest.number,
        )
    draft = ProcedureVersion(
        id=new_id(),
        procedure_id=procedure_id,
        number=latest.number + 1,
        status=VersionStatus.DRAFT,
        definition=latest.definition,
        based_on_version_id=latest.id,
        created_by=principal.user_id,
    )
    db.add(draft)
    try:
        async with db.begin_nested():
            await db.flush()
    except IntegrityError as exc:  # a concurrent request made the draft first
        raise Conflict("Another draft was just started.", code="draft_exists") from exc
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="procedure.draft_created",
        subject_type="procedure",
        subject_id=procedure_id,
        after={"version_id": draft.id, "number": draft.number, "based_on_version_id": latest.id},
    )
    return draft


async def _validation_context(db: AsyncSession, procedure: Procedure, definition: Definition) -> ValidationContext:
    members: set[uuid.UUID] = set()
    procedures: set[uuid.UUID] = set()
    for step in definition.steps:
        for owner in _owners(step):
            if isinstance(owner, MemberOwner):
                members.add(owner.user_id)
        if isinstance(step, SubprocedureStep):
            procedures.add(step.procedure_id)
    record_fields = None
    if procedure.collection_id is not None:
        record_fields = await _collection_fields(db, procedure.collection_id) or {}
    known_procedures: set[uuid.UUID] = set()
    if procedures:
        known_procedures = set(
            await db.scalars(select(Procedure.id).where(Procedure.id.in_(procedures), Procedure.archived_at.is_(None)))
        )
    has_actions = any(isinstance(step, ActionStep) for step in definition.steps)
    return ValidationContext(
        procedure_id=procedure.id,
        record_fields=record_fields,
        member_ids=frozenset(await accounts.existing_member_ids(db, members)),
        procedure_ids=frozenset(known_procedures),
        plugin_actions=await marketplace.platform_actions(db) if has_actions else None,
    )


def _owners(step: Step) -> list[Owner]:
    if not isinstance(step, HUMAN_STEPS):
        return []
    owners: list[Owner] = [step.owner]
    if isinstance(step, ApprovalStep):
        owners += step.approvers
    for kind in step.exceptions:
        owners += kind.notify + kind.escalate_to
    return owners


async def version_problems(db: AsyncSession, procedure: Procedure, version: ProcedureVersion) -> list[FieldProblem]:
    definition, problems = validation.decode_definition(version.definition)
    if definition is None:
        return problems
    return validation.definition_problems(definition, await _validation_context(db, procedure, definition))


async def check_version(
    db: AsyncSession, principal: Principal, procedure_id: uuid.UUID, version_id: uuid.UUID
) -> list[FieldProblem]:
    """What publishing the version would refuse (every problem), without publishing it."""
    principal.require_tenant()
    procedure = await _procedure(db, procedure_id)
    return await version_problems(db, procedure, await _version(db, procedure_id, version_id))


async def publish(
    db: AsyncSession, principal: Principal, procedure_id: uuid.UUID, version_id: uuid.UUID, data: PublishIn
) -> ProcedureVersion:
    """Validate and publish a draft; 422 ``procedure_invalid`` lists every problem of the definition."""
    principal.require_role(Role.MANAGER)
    procedure = await _procedure(db, procedure_id, for_update=True)
    _editable(procedure)
    version = await _version(db, procedure_id, version_id, for_update=True)
    _draft_only(version)
    problems = await version_problems(db, procedure, version)
    if problems:
        raise ValidationProblem(
            "The procedure has {count} problem(s) to fix before it can be published.",
            code="procedure_invalid",
            title="The procedure is not valid",
            errors=problems,
            count=len(problems),
        )
    previous = await db.scalar(
        select(ProcedureVersion.number)
        .where(ProcedureVersion.procedure_id == procedure_id, ProcedureVersion.status == VersionStatus.PUBLISHED)
        .order_by(ProcedureVersion.number.desc())
        .limit(1)
    )
    version.status = VersionStatus.PUBLISHED
    version.change_note = data.change_note
    version.published_by = principal.user_id
    version.published_at = utcnow()
    procedure.updated_at = version.published_at
    await db.flush()
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="procedure.published",
        subject_type="procedure",
        subject_id=procedure_id,
        before={"published_version": previous},
        after={"published_version": version.number, "version_id": version.id, "change_note": data.change_note},
    )
    await outbox.emit(
        db,
        events.PROCEDURE_PUBLISHED.name,
        {"procedure_id": str(procedure_id), "version_id": str(version.id), "number": version.number},
    )
    return version


# ---------------------------------------------------------------- diff


def _value_changes(before: Any, after: Any, path: str = "") -> list[ValueChangeOut]:
    """A structural diff of JSON values: dicts by key, equally long lists by index, anything else whole."""
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[ValueChangeOut] = []
        for key in [*before, *(k for k in after if k not in before)]:
            changes += _value_changes(before.get(key), after.get(key), f"{path}/{key}")
        return changes
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            c for i, (b, a) in enumerate(zip(before, after, strict=True)) for c in _value_changes(b, a, f"{path}/{i}")
        ]
    return [ValueChangeOut(path=path, before=before, after=after)]


def diff_definitions(before: dict[str, Any], after: dict[str, Any], from_number: int, to_number: int) -> DiffOut:
    """Steps added, removed and changed (field by field, matched by key), and changes outside the steps."""
    old_steps = {s["key"]: s for s in before.get("steps", [])}
    new_steps = {s["key"]: s for s in after.get("steps", [])}
    changed = [
        StepChangeOut(key=key, changes=changes)
        for key, step in new_steps.items()
        if key in old_steps and (changes := _value_changes(old_steps[key], step))
    ]
    other = _value_changes(
        {k: v for k, v in before.items() if k != "steps"}, {k: v for k, v in after.items() if k != "steps"}
    )
    old_order = [k for k in old_steps if k in new_steps]
    new_order = [k for k in new_steps if k in old_steps]
    if old_order != new_order:
        other.append(ValueChangeOut(path="/steps", before=old_order, after=new_order))
    return DiffOut(
        from_version=from_number,
        to_version=to_number,
        steps_added=[k for k in new_steps if k not in old_steps],
        steps_removed=[k for k in old_steps if k not in new_steps],
        steps_changed=changed,
        other_changes=other,
    )


async def diff_versions(
    db: AsyncSession,
    principal: Principal,
    procedure_id: uuid.UUID,
    version_id: uuid.UUID,
    against: uuid.UUID | None = None,
) -> DiffOut:
    """What changed from ``against`` (default: the version this one started from) to this version."""
    principal.require_tenant()
    version = await _version(db, procedure_id, version_id)
    base: ProcedureVersion | None
    if against is not None:
        base = await _version(db, procedure_id, against)
    else:
        base = await db.scalar(
            select(ProcedureVersion)
            .where(ProcedureVersion.procedure_id == procedure_id, ProcedureVersion.number < version.number)
            .order_by(ProcedureVersion.number.desc())
            .limit(1)
        )
    if base is None:  # the first version: everything is new
        return diff_definitions({"steps": []}, version.definition, 0, version.number)
    return diff_definitions(base.definition, version.definition, base.number, version.number)


# ---------------------------------------------------------------- acknowledgements


async def acknowledge(
    db: AsyncSession, principal: Principal, procedure_id: uuid.UUID, version_id: uuid.UUID
) -> Acknowledgement:
    """Record that the caller read this published version (again is fine: the first time is kept)."""
    principal.require_tenant()
    version = await _version(db, procedure_id, version_id)
    if version.status != VersionStatus.PUBLISHED:
        raise Conflict("Only a published version can be acknowledged.", code="version_not_published")
    existing = await db.scalar(
        select(Acknowledgement).where(
            Acknowledgement.version_id == version_id, Acknowledgement.user_id == principal.user_id
        )
    )
    if existing is not None:
        return existing
    ack = Acknowledgement(version_id=version_id, user_id=principal.user_id)
    db.add(ack)
    try:
        async with db.begin_nested():
            await db.flush()
    except IntegrityError:  # the same person acknowledged twice at once
        db.expunge(ack)
        found = await db.scalar(
            select(Acknowledgement).where(
                Acknowledgement.version_id == version_id, Acknowledgement.user_id == principal.user_id
            )
        )
        assert found is not None
        return found
    return ack


async def list_acknowledgements(
    db: AsyncSession, principal: Principal, procedure_id: uuid.UUID, version_id: uuid.UUID
) -> list[Acknowledgement]:
    """Who acknowledged the version, earliest first (managers and up)."""
    principal.require_role(Role.MANAGER)
    await _version(db, procedure_id, version_id)
    statement = (
        select(Acknowledgement).where(Acknowledgement.version_id == version_id).order_by(Acknowledgement.created_at)
    )
    return list(await db.scalars(statement))


# ---------------------------------------------------------------- the linked collection


async def _collection_fields(db: AsyncSession, collection_id: uuid.UUID) -> dict[str, str] | None:
    """Field key -> type of a collection of the tenant; None when there is no such collection."""
    try:
        collection = await records.get_collection(db, collection_id)
    except NotFound:
        return None
    return {f.key: f.type for f in collection.fields}
