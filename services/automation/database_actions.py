"""The action kinds whose every effect is a write to our database: start_run, create_record,
update_record, assign_step, notify and wait.

They run in the session the executor passes, in the transaction that records the action as done,
so the dispatcher may run them in the transaction that creates their execution.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.automation.action_base import (
    ActionContext,
    PermanentActionError,
    ValidationEnv,
    Wait,
    _id_problems,
    _jsonable,
    _Kind,
    _require_uuid,
    expression_problems,
    is_expression,
    render,
    resolve,
    template_problem,
)
from services.marketplace import service as marketplace
from services.names import without_hidden_characters
from services.notifications import service as notifications
from services.records import service as records
from services.sops.calendar import hours
from services.sops.calendar import service as calendar
from services.sops.definition import Duration
from services.sops.runs import service as runs
from tenants.base import as_uuid
from tenants.errors import FieldProblem
from tenants.models import Role

LANGUAGES: Final = ("zh-CN", "en")


# ---------------------------------------------------------------- start_run


class StartRun(_Kind):
    name = "start_run"
    keys = frozenset({"procedure_id", "record_id", "data", "title"})

    def problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        problems = _id_problems(config, "procedure_id", pointer, env, required=True, known=env.procedure_ids)
        problems += _id_problems(config, "record_id", pointer, env, required=False, known=None)
        data = config.get("data")
        if data is not None and not isinstance(data, dict) and not is_expression(data):
            problems.append(FieldProblem.of(f"{pointer}/data", "invalid_type", "data is an object of values"))
        problems += expression_problems(data, f"{pointer}/data", env)
        title = config.get("title")
        if title is not None and not isinstance(title, str):
            problems.append(FieldProblem.of(f"{pointer}/title", "invalid_type", "title is text"))
        return problems + expression_problems(title, f"{pointer}/title", env)

    async def act(
        self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        procedure_id = _require_uuid(resolve(config.get("procedure_id"), context), "procedure_id")
        raw_record = resolve(config.get("record_id"), context)
        record_id = None if raw_record is None else _require_uuid(raw_record, "record_id")
        data = resolve(config.get("data") or {}, context)
        if not isinstance(data, dict):
            raise PermanentActionError("data is not an object")
        title = resolve(config.get("title"), context)
        run = await runs.start_run(
            db,
            procedure_id,
            None,
            _jsonable(data),
            record_id,
            title=without_hidden_characters(str(title))[:300] or None if title else None,
        )
        return {"run_id": str(run.id)}


# ---------------------------------------------------------------- create_record / update_record


def _values_problems(config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
    values = config.get("values")
    here = f"{pointer}/values"
    if values is None:
        return [FieldProblem.of(here, "required", "values is required")]
    if not isinstance(values, dict):
        return [FieldProblem.of(here, "invalid_type", "values is an object: field key -> value or expression")]
    collection_id = as_uuid(config.get("collection_id"))
    fields = env.collection_fields.get(collection_id) if collection_id is not None else None
    problems: list[FieldProblem] = []
    for key, value in values.items():
        if fields is not None and key not in fields:
            problems.append(
                FieldProblem.of(f"{here}/{key}", "unknown_field", "the collection has no field '{key}'", key=key)
            )
        problems += expression_problems(value, f"{here}/{key}", env)
    return problems


def _collection_problems(config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
    value = config.get("collection_id")
    here = f"{pointer}/collection_id"
    if value is None:
        return [FieldProblem.of(here, "required", "collection_id is required")]
    found = as_uuid(value)
    if found is None:
        return [FieldProblem.of(here, "invalid_id", "collection_id is a collection's id")]
    if found not in env.collection_fields:
        return [FieldProblem.of(here, "unknown_collection", "no such collection in this workspace")]
    return []


class CreateRecord(_Kind):
    name = "create_record"
    keys = frozenset({"collection_id", "values", "entity_id"})

    def problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        problems = _collection_problems(config, pointer, env) + _values_problems(config, pointer, env)
        return problems + _id_problems(config, "entity_id", pointer, env, required=False, known=None)

    async def act(
        self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        collection_id = _require_uuid(config.get("collection_id"), "collection_id")
        values = resolve(config.get("values") or {}, context)
        raw_entity = resolve(config.get("entity_id"), context)
        entity_id = None if raw_entity is None else _require_uuid(raw_entity, "entity_id")
        record = await records.create_record_values(db, collection_id, _jsonable(values), None, entity_id)
        return {"record_id": str(record.id)}


class UpdateRecord(_Kind):
    name = "update_record"
    keys = frozenset({"collection_id", "record_id", "values"})

    def problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        problems = _collection_problems(config, pointer, env)
        problems += _id_problems(config, "record_id", pointer, env, required=True, known=None)
        return problems + _values_problems(config, pointer, env)

    async def act(
        self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        collection_id = _require_uuid(config.get("collection_id"), "collection_id")
        record_id = _require_uuid(resolve(config.get("record_id"), context), "record_id")
        values = resolve(config.get("values") or {}, context)
        await records.update_record_values(db, collection_id, record_id, _jsonable(values), None)
        return {"record_id": str(record_id)}


# ---------------------------------------------------------------- assign_step


def _role_problem(value: Any, pointer: str) -> FieldProblem | None:
    if value not in {r.value for r in Role}:
        return FieldProblem.of(
            pointer, "unknown_role", "a role is one of {options}", options=", ".join(r.value for r in Role)
        )
    return None


class AssignStep(_Kind):
    name = "assign_step"
    keys = frozenset({"run_id", "step_id", "step_key", "user_id", "owner"})

    def problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        problems = _id_problems(config, "run_id", pointer, env, required=True, known=None)
        step_id, step_key = config.get("step_id"), config.get("step_key")
        if (step_id is None) == (step_key is None):
            problems.append(
                FieldProblem.of(f"{pointer}/step_id", "step_required", "give exactly one of step_id, step_key")
            )
        elif step_id is not None:
            if is_expression(step_id):
                problems += expression_problems(step_id, f"{pointer}/step_id", env)
            elif not isinstance(step_id, int) or isinstance(step_id, bool):
                problems.append(FieldProblem.of(f"{pointer}/step_id", "invalid_type", "step_id is a step number"))
        elif not isinstance(step_key, str) or not step_key:
            problems.append(FieldProblem.of(f"{pointer}/step_key", "invalid_type", "step_key is a step's key"))
        user_id, owner = config.get("user_id"), config.get("owner")
        if (user_id is None) == (owner is None):
            problems.append(
                FieldProblem.of(f"{pointer}/user_id", "assignee_required", "give exactly one of user_id, owner")
            )
        elif user_id is not None:
            problems += _id_problems(config, "user_id", pointer, env, required=True, known=env.member_ids or None)
        elif not isinstance(owner, dict) or set(owner) != {"role"}:
            problems.append(
                FieldProblem.of(
                    f"{pointer}/owner", "invalid_owner", 'owner is {"role": ...}: the least loaded member of it'
                )
            )
        else:
            role_problem = _role_problem(owner["role"], f"{pointer}/owner/role")
            problems += [role_problem] if role_problem else []
        return problems

    async def act(
        self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        run_id = _require_uuid(resolve(config.get("run_id"), context), "run_id")
        if config.get("step_id") is not None:
            step_id = resolve(config["step_id"], context)
            if not isinstance(step_id, int) or isinstance(step_id, bool):
                raise PermanentActionError(f"step_id is not a step number: {step_id!r}")
            step = await runs.step_view(db, run_id, step_id=step_id)
        else:
            step = await runs.step_view(db, run_id, step_key=str(config.get("step_key")))
        if step is None:
            raise PermanentActionError("the run has no such step")
        if config.get("user_id") is not None:
            user_id = _require_uuid(resolve(config["user_id"], context), "user_id")
        else:
            current = as_uuid(step.get("assignee_id"))
            found = await runs.least_loaded_member(db, Role(config["owner"]["role"]), exclude=current)
            if found is None:
                raise PermanentActionError(f"nobody holds the role {config['owner']['role']!r}")
            user_id = found
        await runs.assign_step_as_platform(db, run_id, int(step["step_id"]), user_id)
        return {"run_id": str(run_id), "step_id": step["step_id"], "user_id": str(user_id)}


# ---------------------------------------------------------------- notify

_NAMED_RECIPIENTS: Final = frozenset({"owner", "run_starter"})


class Notify(_Kind):
    name = "notify"
    keys = frozenset({"to", "title", "body", "link"})

    def problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        problems: list[FieldProblem] = []
        to = config.get("to")
        if not isinstance(to, list) or not to:
            problems.append(FieldProblem.of(f"{pointer}/to", "required", "to is a non-empty list of recipients"))
        else:
            for index, recipient in enumerate(to):
                problems += self._recipient_problems(recipient, f"{pointer}/to/{index}", env)
        for key in ("title", "body"):
            value = config.get(key)
            here = f"{pointer}/{key}"
            if value is None:
                if key == "title":
                    problems.append(FieldProblem.of(here, "required", "title is required (zh-CN and/or en)"))
                continue
            if isinstance(value, str):
                value = {"en": value}
            if not isinstance(value, dict) or not value:
                problems.append(FieldProblem.of(here, "invalid_type", 'a text per language: {"zh-CN": ..., "en": ...}'))
                continue
            for language, source in value.items():
                if language not in LANGUAGES:
                    problems.append(
                        FieldProblem.of(f"{here}/{language}", "unknown_language", "languages are zh-CN and en")
                    )
                    continue
                found = template_problem(source, f"{here}/{language}")
                problems += [found] if found else []
        link = config.get("link")
        if link is not None:
            found = template_problem(link, f"{pointer}/link")
            problems += [found] if found else []
        return problems

    def _recipient_problems(self, recipient: Any, pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        if isinstance(recipient, dict):
            if set(recipient) != {"role"}:
                return [FieldProblem.of(pointer, "invalid_recipient", 'a role recipient is {"role": "manager"}')]
            found = _role_problem(recipient["role"], f"{pointer}/role")
            return [found] if found else []
        if not isinstance(recipient, str):
            return [
                FieldProblem.of(
                    pointer, "invalid_recipient", "a recipient is a member id, an expression, a role or a name"
                )
            ]
        if recipient in _NAMED_RECIPIENTS:
            return []
        if is_expression(recipient):
            return expression_problems(recipient, pointer, env)
        member = as_uuid(recipient)
        if member is None:
            return [
                FieldProblem.of(
                    pointer, "invalid_recipient", "owner, run_starter, a member id, a role or an expression"
                )
            ]
        if env.member_ids and member not in env.member_ids:
            return [FieldProblem.of(pointer, "unknown_member", "not a member of this workspace")]
        return []

    async def _recipients(
        self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any], context: dict[str, Any]
    ) -> list[uuid.UUID]:
        found: list[uuid.UUID] = []
        view = context["event"]
        step = context.get("step")
        for recipient in config.get("to") or []:
            if isinstance(recipient, dict):
                found += await runs.members_with_role(db, Role(recipient["role"]))
            elif recipient == "owner":
                assignee = (step or {}).get("assignee_id") if step else view.get("assignee_id")
                member = as_uuid(assignee)
                found += [member] if member else []
            elif recipient == "run_starter":
                member = as_uuid((step or {}).get("started_by") or view.get("started_by"))
                found += [member] if member else []
            else:
                value = resolve(recipient, context)
                for item in value if isinstance(value, list) else [value]:
                    member = as_uuid(item)
                    found += [member] if member else []
        return list(dict.fromkeys(found))

    async def act(
        self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        wanted = await self._recipients(db, ctx, config, context)
        # Only members of this workspace are notified, each once, in their own language.
        locales = await accounts.member_locales(db, set(wanted))
        recipients = [m for m in wanted if m in locales]
        # Templates see the event's names at the top ({{ title }}) as well as event/outputs/step.
        template_context = {**context["event"], **context}

        def texts(key: str) -> dict[str, str]:
            value = config.get(key) or {}
            return {"en": value} if isinstance(value, str) else value

        titles, bodies = texts("title"), texts("body")

        def pick(options: dict[str, str], locale: str) -> str:
            source = options.get(locale) or options.get("en") or options.get("zh-CN") or ""
            return render(source, template_context)

        title = {u: pick(titles, locales.get(u, "zh-CN")) for u in recipients}
        body = {u: pick(bodies, locales.get(u, "zh-CN")) for u in recipients}
        link = render(config["link"], template_context) if config.get("link") else None
        notified = await notifications.notify(db, recipients, title, body, link, dedupe_key=ctx.idempotency_key)
        channels = ["in_app"]
        if notified and await marketplace.messaging_installed(db):
            # The workspace's messaging plugin sends it on through its channels, on its own queue;
            # one message per wording (the recipients' languages), each with its own key.
            contacts = await accounts.member_contacts(db, set(notified))
            wordings: dict[tuple[str, str], list[dict[str, str]]] = {}
            for contact in sorted(contacts, key=lambda c: c.email):
                wording = (title[contact.user_id], body[contact.user_id])
                wordings.setdefault(wording, []).append(
                    {"email": contact.email, "name": contact.display_name, "locale": contact.locale}
                )
            for n, ((text, details), people) in enumerate(sorted(wordings.items())):
                await marketplace.forward_notification(
                    db, people, text, details, link, key=f"{ctx.idempotency_key}:{n}"
                )
            channels.append("messaging")
        return {
            "notified": [str(u) for u in notified],
            "recipients": [str(u) for u in recipients],
            "channels": channels,
        }


# ---------------------------------------------------------------- wait


def _duration_problems(value: Any, pointer: str) -> tuple[Duration | None, list[FieldProblem]]:
    try:
        duration = msgspec.convert(value, Duration)
    except msgspec.ValidationError as exc:
        return None, [
            FieldProblem.of(
                pointer, "invalid_duration", "a duration is {{days, hours, minutes, business}}: {reason}", reason=exc
            )
        ]
    if duration.total_minutes <= 0:
        return None, [FieldProblem.of(pointer, "invalid_duration", "a duration is longer than zero")]
    return duration, []


class WaitAction(_Kind):
    name = "wait"
    keys = frozenset({"duration", "until", "offset"})
    time_limit_ms = 10_000

    def problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        duration, until = config.get("duration"), config.get("until")
        if (duration is None) == (until is None):
            return [FieldProblem.of(f"{pointer}/duration", "wait_required", "give exactly one of duration, until")]
        if duration is not None:
            if config.get("offset") is not None:
                return [FieldProblem.of(f"{pointer}/offset", "unknown_key", "offset goes with until")]
            return _duration_problems(duration, f"{pointer}/duration")[1]
        problems: list[FieldProblem] = []
        if not is_expression(until):
            problems.append(
                FieldProblem.of(f"{pointer}/until", "invalid_expression", "until is an expression (=...) of a moment")
            )
        else:
            problems += expression_problems(until, f"{pointer}/until", env)
        if config.get("offset") is not None:
            try:
                msgspec.convert(config["offset"], Duration)
            except msgspec.ValidationError as exc:
                problems.append(FieldProblem.of(f"{pointer}/offset", "invalid_duration", str(exc)))
        return problems

    async def act(
        self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any] | Wait:
        working_time = await calendar.get_calendar(db)
        now: datetime = context["now"]
        if config.get("duration") is not None:
            return Wait(until=hours.add_duration(now, msgspec.convert(config["duration"], Duration), working_time))
        value = resolve(config.get("until"), context)
        moment = hours.as_moment(value, working_time)
        if moment is None:
            raise PermanentActionError(f"until is not a moment: {value!r}")
        if config.get("offset") is not None:
            moment = hours.add_duration(moment, msgspec.convert(config["offset"], Duration), working_time)
        if moment <= now:
            return {"until": moment.isoformat(), "waited": False}
        return Wait(until=moment)
