"""Timers of automations: cron schedules (on the tenant's calendar), polled plugin triggers, and
the tenant's maintenance (stalled executions sent again, old history purged)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.automation import config, dispatch, executor, replays
from services.automation.definitions import trigger_of
from services.automation.models import Automation, AutomationActionRun, AutomationExecution
from services.automation.schemas import PluginTrigger, ScheduleTrigger
from services.marketplace import service as marketplace
from services.outbox import service as outbox
from services.scheduler import service as scheduler
from services.sops.calendar import service as calendar
from services.sops.calendar.hours import WorkingTime
from tenants.base import utcnow
from tenants.isolation import session_tenant_id

CRON_TIMER = "automation.cron"
PLUGIN_POLL_TIMER = "automation.plugin_poll"
MAINTENANCE_TIMER = "automation.maintenance"
MAINTENANCE_KEY = "automation:maintenance"
MAINTENANCE_INTERVAL = timedelta(minutes=1)


def cron_key(automation_id: uuid.UUID) -> str:
    """The key of the automation's cron timer."""
    return f"cron:{automation_id}"


def working_day(day: date, cal: WorkingTime) -> bool:
    """Whether ``day`` is a working day on the tenant's calendar."""
    if any(h.date == day for h in cal.extra_working_days):
        return True
    if any(h.date == day for h in cal.holidays):
        return False
    return day.isoweekday() in cal.working_days


def _ticks(trigger: ScheduleTrigger, start: datetime, cal: WorkingTime, *, reverse: bool = False) -> Iterable[datetime]:
    """Cron ticks after (or, reversed, at or before) ``start``, in UTC, on working days when asked."""
    zone = ZoneInfo(cal.timezone)
    local = start.astimezone(zone)
    if reverse:
        local = local + timedelta(seconds=1)  # CronSim's reverse is exclusive; a tick at ``start`` counts
    for tick in CronSim(trigger.cron, local.replace(microsecond=0), reverse=reverse):
        if trigger.business_days_only and not working_day(tick.date(), cal):
            continue
        yield tick.astimezone(UTC)


def _first(ticks: Iterable[datetime], limit: int = 5000) -> datetime | None:
    # A cron like "0 0 30 2 *" never fires; on days-only schedules, a year of holidays is the bound.
    for i, tick in enumerate(ticks):
        if i >= limit:
            return None
        return tick
    return None


def next_fire(trigger: ScheduleTrigger, after: datetime, cal: WorkingTime) -> datetime | None:
    """The first tick after ``after`` (None: the schedule never fires)."""
    return _first(_ticks(trigger, after, cal))


def latest_fire(trigger: ScheduleTrigger, at_or_before: datetime, cal: WorkingTime) -> datetime | None:
    """The last tick at or before ``at_or_before`` (None: none)."""
    return _first(_ticks(trigger, at_or_before, cal, reverse=True))


async def arm_timers(db: AsyncSession, automation: Automation) -> None:
    """Keep the automation's cron timer in step with it, and the tenant's maintenance timer armed."""
    key = cron_key(automation.id)
    trigger = trigger_of(automation)
    if automation.enabled and isinstance(trigger, ScheduleTrigger):
        cal = await calendar.get_calendar(db)
        due = next_fire(trigger, utcnow(), cal)
        if due is not None:
            await scheduler.schedule(
                db, kind=CRON_TIMER, key=key, due_at=due, payload={"automation_id": str(automation.id)}
            )
        else:
            await scheduler.cancel(db, key)
    else:
        await scheduler.cancel(db, key)
    if automation.enabled and isinstance(trigger, PluginTrigger):
        await _arm_plugin_poll(db, trigger.plugin, trigger.trigger)
    await scheduler.schedule(
        db, kind=MAINTENANCE_TIMER, key=MAINTENANCE_KEY, due_at=utcnow() + MAINTENANCE_INTERVAL, payload={}
    )


async def fire_cron(db: AsyncSession, timer: scheduler.DueTimer, now: datetime | None = None) -> datetime | None:
    """The ``automation.cron`` timer handler: one execution for the tick (keyed by the tick, so a
    double fire makes one execution); returns the next tick after now.

    After downtime the timer comes late: ``fire_once`` makes one execution for the latest missed
    tick, ``skip`` makes none; never one per missed tick.
    """
    now = now or timer.now or utcnow()
    automation = await db.scalar(
        select(Automation).where(Automation.id == uuid.UUID(str(timer.payload["automation_id"])))
    )
    if automation is None or not automation.enabled:
        return None
    trigger = trigger_of(automation)
    if not isinstance(trigger, ScheduleTrigger):
        return None
    cal = await calendar.get_calendar(db)
    tick = latest_fire(trigger, now, cal)
    if tick is not None and tick >= timer.due_at - timedelta(seconds=1):
        late = scheduler.missed(timer, now)
        if not late or trigger.missed == "fire_once":
            event_id = f"cron:{tick.isoformat()}"
            event = {
                "id": event_id,
                "type": "schedule",
                "occurred_at": now.isoformat(),
                "actor": None,
                "scheduled_at": tick.isoformat(),
                "automation_id": str(automation.id),
            }
            await dispatch.new_execution(db, automation, event_id, event, now)
    return next_fire(trigger, now, cal)


async def _arm_plugin_poll(db: AsyncSession, plugin: str, trigger: str) -> None:
    """A polled plugin trigger gets one timer per workspace (however many automations use it)."""
    seconds = marketplace.poll_seconds(plugin, trigger)
    if seconds is None:
        return  # fired by the plugin's own events, not polled
    key = f"plugin-poll:{plugin}.{trigger}"
    if await scheduler.get_timer(db, key) is None:
        await scheduler.schedule(
            db,
            kind=PLUGIN_POLL_TIMER,
            key=key,
            due_at=utcnow() + timedelta(seconds=seconds),
            payload={"plugin": plugin, "trigger": trigger, "poll_seconds": seconds},
        )


async def fire_plugin_poll(db: AsyncSession, timer: scheduler.DueTimer, now: datetime | None = None) -> datetime | None:
    """The ``automation.plugin_poll`` timer handler: ask a worker to poll the plugin (its code runs
    only there) while an enabled automation of the workspace uses the trigger; returns the next poll."""
    now = now or timer.now or utcnow()
    plugin, trigger = str(timer.payload["plugin"]), str(timer.payload["trigger"])
    used = any(
        a.trigger.get("plugin") == plugin and a.trigger.get("trigger") == trigger
        for a in await db.scalars(
            select(Automation).where(Automation.trigger_type == "plugin", Automation.enabled.is_(True))
        )
    )
    if not used:
        return None
    await outbox.emit(db, marketplace.POLL_DUE, {"plugin": plugin, "trigger": trigger})
    return now + timedelta(seconds=int(timer.payload["poll_seconds"]))


async def purge_executions(db: AsyncSession, now: datetime | None = None) -> int:
    """Delete the session tenant's finished executions older than the retention (at least 90 days)."""
    cutoff = (now or utcnow()) - timedelta(days=max(config.retention_days(), 90))
    old = select(AutomationExecution.id).where(
        AutomationExecution.created_at < cutoff, AutomationExecution.status.in_(tuple(executor.TERMINAL))
    )
    ids = list(await db.scalars(old.limit(5000)))
    if not ids:
        return 0
    await db.execute(delete(AutomationActionRun).where(AutomationActionRun.execution_id.in_(ids)))
    await db.execute(delete(AutomationExecution).where(AutomationExecution.id.in_(ids)))
    return len(ids)


_last_purge: dict[uuid.UUID, date] = {}


async def maintain(db: AsyncSession, timer: scheduler.DueTimer) -> datetime | None:
    """The tenant's ``automation.maintenance`` timer: recover stalled executions and forget signed
    webhook deliveries past their signature's tolerance every few minutes, purge old history once a
    day; it stops when the tenant has no automations."""
    now = timer.now or utcnow()  # the scheduler pass's clock (it may be simulated)
    await executor.recover_stalled(db, now)
    tenant_id = session_tenant_id(db.sync_session)
    # History is kept at least the retention: never purge by a clock ahead of the real one.
    purge_now = min(now, utcnow())
    if tenant_id is not None and _last_purge.get(tenant_id) != purge_now.date():
        await purge_executions(db, purge_now)
        _last_purge[tenant_id] = purge_now.date()
    await replays.prune(db, purge_now)
    if await db.scalar(select(func.count()).select_from(Automation)) == 0:
        return None
    return now + MAINTENANCE_INTERVAL


scheduler.register_timer_handler(CRON_TIMER, fire_cron)
scheduler.register_timer_handler(PLUGIN_POLL_TIMER, fire_plugin_poll)
scheduler.register_timer_handler(MAINTENANCE_TIMER, maintain)
