"""Default SLA escalation chains, installed when a procedure with due steps is published.

For every human step with a ``due`` (once per procedure and step key; a tenant that edits or
deletes them keeps its choice), two ordinary automations are installed, so a tenant sees, edits
and disables them like any other:

1. ``step.due_soon`` -> remind the step's assignee;
2. ``step.overdue`` -> tell the managers, wait ``ESCALATE_AFTER`` of working time, then, if the
   step is still open (a ``when`` re-checked against the step's fresh state), reassign it to the
   least loaded manager.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.accounts import service as accounts
from services.automation import service
from services.automation.models import DefaultEscalation
from services.automation.schemas import AutomationIn, Description, RunEventTrigger
from services.broker import tenant_session
from services.outbox import service as outbox
from services.sops.definition import HUMAN_STEPS
from services.sops.procedures import service as procedures
from tenants.errors import NotFound, ProblemError

log = logging.getLogger("guiju.automation.escalations")

# Working time between the overdue notice and the reassignment to a manager.
ESCALATE_AFTER: dict[str, Any] = {"hours": 4, "business": True}


# An automation has one name: it is written in the workspace's language (its description has both).
_NAMES: dict[str, tuple[str, str]] = {
    "zh-CN": ("时限提醒：{title}", "超时升级：{title}"),
    "en": ("SLA reminder: {title}", "SLA escalation: {title}"),
}


def default_automations(
    procedure_id: uuid.UUID, step_key: str, step_title: str, language: str = "en"
) -> list[AutomationIn]:
    """The default escalation automations of one due step, named in ``language``."""
    reminder_name, overdue_name = _NAMES.get(language, _NAMES["en"])
    reminder = AutomationIn(
        name=reminder_name.format(title=step_title)[:200],
        description=Description(
            zh_cn=f"步骤「{step_title}」即将到期时提醒负责人。", en=f"Remind the assignee before '{step_title}' is due."
        ),
        trigger=RunEventTrigger(events=["step.due_soon"], procedure_id=procedure_id, step_key=step_key),
        actions=[
            {
                "kind": "notify",
                "to": ["owner"],
                "title": {"zh-CN": "即将到期：{{ title }}", "en": "Due soon: {{ title }}"},
                "body": {
                    "zh-CN": "步骤「{{ title }}」将于 {{ due_at }} 到期。",
                    "en": "The step '{{ title }}' is due at {{ due_at }}.",
                },
                "link": "/runs/{{ run_id }}",
            }
        ],
    )
    overdue = AutomationIn(
        name=overdue_name.format(title=step_title)[:200],
        description=Description(
            zh_cn=f"步骤「{step_title}」逾期时通知经理；4 个工作小时后仍未完成则转派给工作量最少的经理。",
            en=f"Tell the managers when '{step_title}' is overdue; reassign it to the least loaded manager "
            "if it is still open 4 working hours later.",
        ),
        trigger=RunEventTrigger(events=["step.overdue"], procedure_id=procedure_id, step_key=step_key),
        actions=[
            {
                "kind": "notify",
                "to": [{"role": "manager"}],
                "title": {"zh-CN": "已逾期：{{ title }}", "en": "Overdue: {{ title }}"},
                "body": {
                    "zh-CN": "步骤「{{ title }}」已于 {{ due_at }} 逾期。",
                    "en": "The step '{{ title }}' was due at {{ due_at }}.",
                },
                "link": "/runs/{{ run_id }}",
            },
            {"kind": "wait", "duration": dict(ESCALATE_AFTER)},
            {
                "kind": "assign_step",
                "when": "step.open",
                "run_id": "=event.run_id",
                "step_id": "=event.step_id",
                "owner": {"role": "manager"},
            },
        ],
    )
    return [reminder, overdue]


async def install_defaults(db: AsyncSession, procedure_id: uuid.UUID, version_id: uuid.UUID) -> int:
    """Install the default escalations of a published version's due steps (idempotent); returns how
    many steps got them now."""
    try:
        version = await procedures.version_by_id(db, version_id)
    except NotFound:
        return 0
    installed = 0
    language = await accounts.tenant_locale(db)
    for step in version.definition.steps:
        if not isinstance(step, HUMAN_STEPS) or step.due is None:
            continue
        done = await db.scalar(
            select(DefaultEscalation.step_key).where(
                DefaultEscalation.procedure_id == procedure_id, DefaultEscalation.step_key == step.key
            )
        )
        if done is not None:
            continue
        db.add(DefaultEscalation(procedure_id=procedure_id, step_key=step.key))
        for automation in default_automations(procedure_id, step.key, step.title, language):
            await service.install_automation(db, automation, actor_id=None)
        installed += 1
    await db.flush()
    return installed


async def on_procedure_published(messages: list[dict[str, Any]]) -> None:
    """Outbox subscriber of ``procedure.published``."""
    for message in messages:
        tenant = message.get("tenant_id")
        payload = message.get("payload") or {}
        if not tenant or not payload.get("version_id"):
            continue
        tenant_id = uuid.UUID(str(tenant))
        try:
            async with tenant_session(tenant_id) as db:
                await install_defaults(db, uuid.UUID(payload["procedure_id"]), uuid.UUID(payload["version_id"]))
        except ProblemError as exc:  # never block the event for the other subscribers: log why
            log.warning(
                "default escalations not installed",
                extra={
                    "tenant_id": str(tenant_id),
                    "procedure_id": payload.get("procedure_id"),
                    "code": exc.code,
                    "detail": exc.detail,
                },
            )


outbox.subscribe(events.PROCEDURE_PUBLISHED.name, on_procedure_published)

__all__ = ["default_automations", "install_defaults", "on_procedure_published"]
