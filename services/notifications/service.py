"""In-app notifications: written by the runs (assignments, problems, mentions, overdue steps), by
automations and by plugins; read by members, in their own language.

- :func:`send` writes a notice the platform words itself: a ``kind`` (see :data:`KINDS`) and its
  params (names of things as authored, ids of people). It is worded when read (:func:`render`),
  in the reader's language, with people's names as they are then. Each member chooses per kind
  whether they also get it by e-mail and through the workspace's messaging plugin
  (:func:`preferences`); :func:`send` sends those on once the transaction commits.
- :func:`notify` writes a ``message``: words someone wrote (an automation, a plugin), kept as written.

Both insert in the caller's transaction and never commit; with a ``dedupe_key`` a second call for
the same cause and person is a no-op, so a redelivered event or action never notifies twice.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import msgspec
from sqlalchemy import ScalarSelect, Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.db.statements import insert_ignoring_conflicts
from services.json_body import decode_json_body
from services.mail import service as mail
from services.notifications.models import Notification, NotificationPreference
from services.settings import Settings, load_settings
from services.web.i18n import N_, translate
from tenants.base import as_uuid, new_id, utcnow
from tenants.errors import FieldProblem, NotFound, ProblemError, ValidationProblem
from tenants.isolation import session_tenant_id

MAX_PAGE = 200
MAX_TITLE = 300
MAX_BODY = 10_000
MAX_EXCERPT = 200
MESSAGE = "message"
MAIL_TEMPLATE = "notification"

Filter = Literal["all", "unread", "mentions"]
FILTERS: tuple[Filter, ...] = ("all", "unread", "mentions")


@dataclass(frozen=True)
class Kind:
    """One kind of notice: its wording (message ids; the variant without ``{actor}`` when nobody
    did it), the params whose text is its body, whether a member may choose its channels, and the
    channels it goes to when they have not chosen."""

    key: str
    label: str
    sentence: str
    sentence_no_actor: str = ""
    body_param: str = ""
    choosable: bool = True
    email: bool = False
    messaging: bool = True


KINDS: dict[str, Kind] = {
    k.key: k
    for k in (
        Kind(
            "step_assigned",
            N_("A task is assigned to me"),
            N_("{actor} assigned the step “{step}” of “{run}” to you."),
            N_("The step “{step}” of “{run}” is assigned to you."),
        ),
        Kind(
            "step_claimable",
            N_("A task my role can claim"),
            N_("You can claim the step “{step}” of “{run}”."),
        ),
        Kind(
            "exception_raised",
            N_("A problem is reported"),
            N_("{actor} reported a problem on “{run}”: {label}."),
            N_("A problem was reported on “{run}”: {label}."),
            body_param="note",
            email=True,
        ),
        Kind(
            "exception_escalated",
            N_("A problem is escalated to me"),
            N_("A problem on “{run}” is still open and is escalated to you: {label}."),
            email=True,
        ),
        Kind(
            "step_overdue",
            N_("A task is overdue"),
            N_("The step “{step}” of “{run}” is overdue."),
        ),
        Kind(
            "mentioned",
            N_("Someone mentions me"),
            N_("{actor} mentioned you on “{run}”."),
            body_param="excerpt",
        ),
        Kind(
            "procedure_suggestion",
            N_("Someone suggests a change to my procedure"),
            N_("{actor} suggests a change to the step “{step}” of “{procedure}”."),
            body_param="excerpt",
        ),
        Kind(
            "plugin_paused",
            N_("A plugin is paused"),
            N_("{plugin} is paused after {failures} failures in a row."),
            choosable=False,
        ),
        Kind(
            "webhook_disabled",
            N_("A webhook is turned off"),
            N_("The webhook to {url} is turned off after {failures} failed deliveries in a row."),
            choosable=False,
            email=True,
        ),
    )
}
CHOOSABLE: tuple[Kind, ...] = tuple(k for k in KINDS.values() if k.choosable)
SOMEONE = N_("Someone")
SUGGESTION_NO_STEP = N_("{actor} suggests a change to “{procedure}”.")
OPEN_LINK = N_("Open it: {link}")
MAIL_FOOTER = N_("You get this e-mail because of your notification settings: {link}")
PLUGIN_PAUSED_BODY = N_("Automations that use it try again later. Last error: {error}")
WEBHOOK_DISABLED_BODY = N_("Turn it back on once its receiver answers again. Last error: {error}")


class _Config:
    settings: Settings | None = None


_config = _Config()


def configure(settings: Settings) -> None:
    """Use ``settings`` (app and worker start-up): the public address that links in e-mails use."""
    _config.settings = settings


def _public_url() -> str:
    if _config.settings is None:
        _config.settings = load_settings("embedded")
    return _config.settings.public_url


# ---------------------------------------------------------------- the messaging channel

Forward = Callable[[AsyncSession, list[dict[str, str]], str, str, "str | None", str], Awaitable[None]]
Available = Callable[[AsyncSession], Awaitable[bool]]


@dataclass(frozen=True)
class Channel:
    """A way out of the app that a service above this one provides (the marketplace's messaging
    plugin): whether the session's workspace has it, and how to send a notice through it."""

    available: Available
    forward: Forward


_channels: dict[str, Channel] = {}


def use_channel(name: str, channel: Channel) -> None:
    """Register the channel ``name`` (``messaging``) that :func:`send` uses where members want it."""
    _channels[name] = channel


async def messaging_available(db: AsyncSession) -> bool:
    """Whether the session's workspace can send notices on as messages (its messaging plugin)."""
    channel = _channels.get("messaging")
    return channel is not None and await channel.available(db)


# ---------------------------------------------------------------- writing


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tenant(db: AsyncSession) -> uuid.UUID:
    tenant_id = session_tenant_id(db.sync_session)
    if tenant_id is None:
        raise RuntimeError("notifications need a tenant-scoped session")
    return tenant_id


async def _insert(
    db: AsyncSession,
    user_ids: Iterable[uuid.UUID],
    *,
    kind: str,
    params: Mapping[str, Any],
    title: str | dict[uuid.UUID, str],
    body: str | dict[uuid.UUID, str],
    link: str | None,
    dedupe_key: str | None,
) -> list[uuid.UUID]:
    tenant_id = _tenant(db)
    wanted = list(dict.fromkeys(user_ids))
    if not wanted:
        return []
    now = utcnow()
    rows = [
        {
            "tenant_id": tenant_id,
            "id": new_id(),
            "user_id": user_id,
            "kind": kind,
            "params": dict(params),
            "title": _clip(title if isinstance(title, str) else title.get(user_id, ""), MAX_TITLE),
            "body": _clip(body if isinstance(body, str) else body.get(user_id, ""), MAX_BODY),
            "link": link,
            "dedupe_key": dedupe_key,
            "read_at": None,
            "created_at": now,
        }
        for user_id in wanted
    ]
    inserted = await insert_ignoring_conflicts(
        db, Notification, rows, conflict=("tenant_id", "user_id", "dedupe_key"), returning=("user_id",)
    )
    notified = {row[0] for row in inserted}
    return [u for u in wanted if u in notified]


async def notify(
    db: AsyncSession,
    user_ids: Iterable[uuid.UUID],
    title: str | dict[uuid.UUID, str],
    body: str | dict[uuid.UUID, str] = "",
    link: str | None = None,
    *,
    dedupe_key: str | None = None,
) -> list[uuid.UUID]:
    """Notify each of ``user_ids`` with words someone wrote (the same for all, or per user); returns
    the users notified now (those already notified for ``dedupe_key`` are left out)."""
    return await _insert(
        db, user_ids, kind=MESSAGE, params={}, title=title, body=body, link=link, dedupe_key=dedupe_key
    )


async def send(
    db: AsyncSession,
    user_ids: Iterable[uuid.UUID],
    kind: str,
    params: Mapping[str, Any],
    *,
    link: str | None = None,
    dedupe_key: str,
) -> list[uuid.UUID]:
    """Notify each of ``user_ids`` (members of the session's workspace; others are left out) with a
    notice of ``kind``, and send it on by e-mail and messaging to those who want it. Returns the
    users notified now: once per ``dedupe_key`` and person, however often this is called."""
    if kind not in KINDS:
        raise ValueError(f"{kind!r} is not a kind of notice")
    wanted = set(user_ids)
    members = await accounts.existing_member_ids(db, wanted) if wanted else set()
    notified = await _insert(
        db,
        [u for u in dict.fromkeys(user_ids) if u in members],
        kind=kind,
        params=params,
        title="",
        body="",
        link=link,
        dedupe_key=dedupe_key,
    )
    if notified:
        await _send_on(db, notified, kind, dict(params), link, dedupe_key)
    return notified


async def _send_on(
    db: AsyncSession, user_ids: list[uuid.UUID], kind: str, params: dict[str, Any], link: str | None, key: str
) -> None:
    wanted = await _channels_wanted(db, user_ids, kind)
    email_to = {u for u, (email, _m) in wanted.items() if email}
    message_to = {u for u, (_e, messaging) in wanted.items() if messaging}
    channel = _channels.get("messaging")
    if message_to and (channel is None or not await channel.available(db)):
        message_to = set()
    if not email_to and not message_to:
        return
    contacts = await accounts.member_contacts(db, email_to | message_to)
    names = await _names(db, params)
    absolute = _absolute(link)
    wordings: dict[tuple[str, str], list[dict[str, str]]] = {}
    for contact in sorted(contacts, key=lambda c: c.email):
        title, body = _words(kind, params, "", "", contact.locale, names)
        if contact.user_id in email_to:
            lines = [title, *([body] if body else [])]
            if absolute:
                lines.append(translate(OPEN_LINK, contact.locale, link=absolute))
            lines.append(translate(MAIL_FOOTER, contact.locale, link=_public_url() + "/me#notifications"))
            await mail.request_mail(
                db,
                to=contact.email,
                template=MAIL_TEMPLATE,
                locale=contact.locale,
                variables={"subject": title, "body": "\n\n".join(lines)},
                link=absolute,
            )
        if contact.user_id in message_to:
            wordings.setdefault((title, body), []).append(
                {"email": contact.email, "name": contact.display_name, "locale": contact.locale}
            )
    if wordings and channel is not None:
        for n, ((title, body), people) in enumerate(sorted(wordings.items())):
            await channel.forward(db, people, title, body, link, f"{key}:{n}")


def _absolute(link: str | None) -> str | None:
    if not link:
        return None
    return link if link.startswith(("https://", "http://")) else _public_url() + "/" + link.lstrip("/")


# ---------------------------------------------------------------- preferences


@dataclass(frozen=True)
class Preference:
    kind: Kind
    email: bool
    messaging: bool


async def preferences(db: AsyncSession, user_id: uuid.UUID) -> list[Preference]:
    """The member's channels for every kind they may choose, their defaults where they have not."""
    rows = {
        row.kind: row
        for row in await db.scalars(select(NotificationPreference).where(NotificationPreference.user_id == user_id))
    }
    found: list[Preference] = []
    for kind in CHOOSABLE:
        row = rows.get(kind.key)
        found.append(Preference(kind, row.by_email if row else kind.email, row.by_messaging if row else kind.messaging))
    return found


async def set_preferences(
    db: AsyncSession, user_id: uuid.UUID, email: Iterable[str], messaging: Iterable[str]
) -> list[Preference]:
    """Set the member's channels: ``email`` and ``messaging`` name the kinds each channel carries
    (kinds a member may not choose, or that do not exist, are left out)."""
    by_email, by_messaging = set(email), set(messaging)
    rows = {
        row.kind: row
        for row in await db.scalars(select(NotificationPreference).where(NotificationPreference.user_id == user_id))
    }
    now = utcnow()
    for kind in CHOOSABLE:
        row = rows.get(kind.key)
        if row is None:
            row = NotificationPreference(user_id=user_id, kind=kind.key)
            db.add(row)
        row.by_email = kind.key in by_email
        row.by_messaging = kind.key in by_messaging
        row.updated_at = now
    await db.flush()
    return await preferences(db, user_id)


async def _channels_wanted(
    db: AsyncSession, user_ids: list[uuid.UUID], kind: str
) -> dict[uuid.UUID, tuple[bool, bool]]:
    default = KINDS[kind]
    wanted = {u: (default.email, default.messaging) for u in user_ids}
    if not default.choosable:
        return wanted
    rows = await db.execute(
        select(
            NotificationPreference.user_id, NotificationPreference.by_email, NotificationPreference.by_messaging
        ).where(NotificationPreference.user_id.in_(user_ids), NotificationPreference.kind == kind)
    )
    for user_id, email, messaging in rows:
        wanted[user_id] = (bool(email), bool(messaging))
    return wanted


# ---------------------------------------------------------------- wording


def _person_ids(params: Mapping[str, Any]) -> set[uuid.UUID]:
    value = as_uuid(params.get("actor_id"))
    return {value} if value is not None else set()


async def _names(db: AsyncSession, *params: Mapping[str, Any]) -> dict[str, str]:
    """The display names of the people the params name (members of the workspace only)."""
    ids: set[uuid.UUID] = set()
    for one in params:
        ids |= _person_ids(one)
    if not ids:
        return {}
    return {str(c.user_id): c.display_name for c in await accounts.member_contacts(db, ids)}


def _words(
    kind: str, params: Mapping[str, Any], title: str, body: str, locale: str, names: Mapping[str, str]
) -> tuple[str, str]:
    """A notice's title and body in ``locale``: a kind's wording, or a message's own words."""
    spec = KINDS.get(kind)
    if spec is None:
        return title, body
    values = {str(k): v for k, v in params.items()}
    actor = values.get("actor_id")
    message = spec.sentence
    if spec.sentence_no_actor and not actor:
        message = spec.sentence_no_actor
    if kind == "procedure_suggestion" and not values.get("step"):
        message = SUGGESTION_NO_STEP
    values["actor"] = names.get(str(actor), translate(SOMEONE, locale)) if actor else ""
    for key in ("step", "run", "label", "plugin", "failures", "procedure", "url"):
        values.setdefault(key, "")
    sentence = translate(message, locale, **values)
    text = ""
    if spec.body_param:
        text = str(values.get(spec.body_param) or "")
    elif kind == "plugin_paused" and values.get("error"):
        text = translate(PLUGIN_PAUSED_BODY, locale, error=values["error"])
    elif kind == "webhook_disabled" and values.get("error"):
        text = translate(WEBHOOK_DISABLED_BODY, locale, error=values["error"])
    return sentence, text


@dataclass(frozen=True)
class Notice:
    """A notification as its reader sees it: worded in their language."""

    id: uuid.UUID
    kind: str
    params: dict[str, Any]
    title: str
    body: str
    link: str | None
    read_at: datetime | None
    created_at: datetime

    @property
    def unread(self) -> bool:
        return self.read_at is None


async def render(db: AsyncSession, rows: Sequence[Notification], locale: str) -> list[Notice]:
    """``rows`` worded in ``locale``, with the names people have now."""
    names = await _names(db, *(row.params or {} for row in rows))
    found: list[Notice] = []
    for row in rows:
        title, body = _words(row.kind, row.params or {}, row.title, row.body, locale, names)
        found.append(
            Notice(
                id=row.id,
                kind=row.kind,
                params=dict(row.params or {}),
                title=title,
                body=body,
                link=row.link,
                read_at=row.read_at,
                created_at=row.created_at,
            )
        )
    return found


# ---------------------------------------------------------------- reading


def _encode_cursor(notification_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode([str(notification_id)])).decode()


def _decode_cursor(cursor: str) -> uuid.UUID:
    try:
        values = decode_json_body(base64.urlsafe_b64decode(cursor.encode()))
        return uuid.UUID(values[0])
    except (ValueError, TypeError, IndexError, KeyError, ProblemError) as exc:
        raise ValidationProblem(
            errors=[FieldProblem(pointer="/query/cursor", code="invalid_cursor", message="not a cursor of this list")]
        ) from exc


async def list_notifications(
    db: AsyncSession,
    user_id: uuid.UUID,
    *,
    unread: bool = False,
    cursor: str | None = None,
    limit: int = 50,
    show: Filter = "all",
) -> tuple[list[Notification], str | None]:
    """A member's notifications, newest first (ids are time-ordered), with keyset pagination;
    ``show`` keeps only the unread ones, or those that mention them."""
    limit = max(1, min(limit, MAX_PAGE))
    query = select(Notification).where(Notification.user_id == user_id).order_by(Notification.id.desc())
    if unread or show == "unread":
        query = query.where(Notification.read_at.is_(None))
    if show == "mentions":
        query = query.where(Notification.kind == "mentioned")
    if cursor:
        query = query.where(Notification.id < _decode_cursor(cursor))
    rows = list((await db.scalars(query.limit(limit + 1))).all())
    next_cursor = _encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor


def _unread_query(user_id: uuid.UUID) -> Select[tuple[int]]:
    return (
        select(func.count())
        .select_from(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
    )


async def unread_count(db: AsyncSession, user_id: uuid.UUID) -> int:
    """How many of the member's notifications are unread."""
    return int(await db.scalar(_unread_query(user_id)) or 0)


def unread_count_column(user_id: uuid.UUID) -> ScalarSelect[int]:
    """:func:`unread_count` as a scalar subquery, for a statement that reads more (the bell's count
    is read with the page's viewer, in the same round trip)."""
    return _unread_query(user_id).scalar_subquery()


async def mark_read(db: AsyncSession, user_id: uuid.UUID, notification_id: uuid.UUID) -> Notification:
    """Mark one of the member's notifications read (idempotent); another member's is a 404."""
    row = await db.scalar(
        select(Notification).where(Notification.id == notification_id, Notification.user_id == user_id)
    )
    if row is None:
        raise NotFound("No such notification.", code="notification_not_found")
    if row.read_at is None:
        row.read_at = utcnow()
        await db.flush()
    return row


async def mark_all_read(db: AsyncSession, user_id: uuid.UUID) -> int:
    """Mark every unread notification of the member read; returns how many were unread."""
    result = await db.execute(
        update(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
        .values(read_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
