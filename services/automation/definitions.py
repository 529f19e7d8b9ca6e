"""An automation's stored definition: its trigger as a struct, its descriptions, and finding one."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.automation.models import Automation
from services.automation.schemas import Description, Trigger
from services.db.statements import one_or_raise
from tenants.errors import NotFound

TRIGGER_TYPES = ("record_event", "run_event", "schedule", "webhook", "plugin")


def trigger_dict(trigger: Trigger) -> dict[str, Any]:
    """The trigger as stored (JSON)."""
    raw: dict[str, Any] = msgspec.to_builtins(trigger)
    return raw


def trigger_type_of(trigger: Trigger) -> str:
    """The trigger's ``type`` tag (``record_event``, ``run_event``, ``schedule``, ``webhook``, ``plugin``)."""
    return str(trigger.__struct_config__.tag)


def trigger_of(automation: Automation) -> Trigger:
    """The automation's trigger as a struct."""
    result: Trigger = msgspec.convert(automation.trigger, Trigger)
    return result


def description_of(automation: Automation) -> Description:
    """The automation's description in both languages."""
    return Description(zh_cn=automation.description_zh, en=automation.description_en)


async def find_automation(db: AsyncSession, automation_id: uuid.UUID, *, lock: bool = False) -> Automation:
    """The session tenant's automation ``automation_id`` (locked with ``lock``); 404 if there is none."""
    missing = NotFound("No such automation.", code="automation_not_found")
    return await one_or_raise(db, select(Automation).where(Automation.id == automation_id), missing, lock=lock)
