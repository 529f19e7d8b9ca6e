"""The onboarding wizard of a new workspace: pick packs, give their roles to people, install them
one by one with progress, then what to do next.

The wizard's answers are saved per step (one row per workspace), so leaving and coming back resumes
it. Installing goes through :func:`services.gallery.install.install`, one pack per call, each in its
own savepoint: a refused pack is recorded with its reason (and can be retried) while the others
stay installed, and the progress shown is what has really been installed so far.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.gallery.catalog import _language, _pack, catalog
from services.gallery.install import _installation, install
from services.gallery.loader import localize
from services.gallery.models import OnboardingWizard
from services.gallery.schemas import CollectionChoiceIn, InstallIn, KeyClashOut
from services.records import service as records
from services.settings import Settings
from tenants.base import utcnow
from tenants.errors import FieldProblem, ProblemError, ValidationProblem
from tenants.models import Role
from tenants.principal import Principal

STEPS = 4
RoleChoice = Literal["me", "member", "invite", "none"]


@dataclass
class RoleAnswer:
    """What the owner chose for one pack role."""

    choice: RoleChoice = "none"
    user_id: str | None = None
    email: str | None = None


@dataclass
class Wizard:
    """The wizard's saved answers and results."""

    step: int = 1
    packs: list[str] = field(default_factory=list)
    roles: dict[str, dict[str, RoleAnswer]] = field(default_factory=dict)  # pack -> role -> answer
    samples: bool = True
    collections: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)  # pack -> key -> choice
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # pack -> {status, reason, items}

    def dump(self) -> dict[str, Any]:
        return {
            "packs": self.packs,
            "roles": {p: {k: vars(a) for k, a in r.items()} for p, r in self.roles.items()},
            "samples": self.samples,
            "collections": self.collections,
            "results": self.results,
        }

    @classmethod
    def load(cls, step: int, state: dict[str, Any]) -> Wizard:
        offered = catalog().packs
        return cls(
            step=step,
            packs=[p for p in state.get("packs") or [] if p in offered],
            roles={p: {k: RoleAnswer(**a) for k, a in r.items()} for p, r in (state.get("roles") or {}).items()},
            samples=bool(state.get("samples", True)),
            collections=dict(state.get("collections") or {}),
            results=dict(state.get("results") or {}),
        )


@dataclass(frozen=True)
class PackCard:
    id: str
    title: str
    summary: str
    industry: str
    procedures: int
    collections: int
    automations: int
    installed: bool


@dataclass(frozen=True)
class PackRole:
    pack_id: str
    pack_title: str
    key: str
    title: str
    description: str
    answer: RoleAnswer


async def load(db: AsyncSession, principal: Principal) -> Wizard:
    """The workspace's wizard as last saved (a fresh one at step 1)."""
    principal.require_role(Role.ADMIN)
    row = await db.get(OnboardingWizard, principal.require_tenant())
    return Wizard.load(row.step, row.state) if row is not None else Wizard()


async def save(db: AsyncSession, principal: Principal, wizard: Wizard) -> None:
    tenant_id = principal.require_tenant()
    row = await db.get(OnboardingWizard, tenant_id)
    if row is None:
        row = OnboardingWizard(tenant_id=tenant_id)
        db.add(row)
    row.step = max(1, min(STEPS, wizard.step))
    row.state = wizard.dump()
    row.updated_by = principal.user_id
    row.updated_at = utcnow()
    await db.flush()


def pack_cards(language: str, installed: set[str]) -> list[PackCard]:
    """The gallery's packs as the wizard's cards, in ``language``."""
    cards = []
    for pack in sorted(catalog().packs.values(), key=lambda p: (p.industry == "general", p.id)):
        cards.append(
            PackCard(
                id=pack.id,
                title=str(localize(pack.meta["title"], language)),
                summary=str(localize(pack.meta["summary"], language)),
                industry=pack.industry,
                procedures=len(pack.of_kind("procedure")),
                collections=len(pack.of_kind("collection")),
                automations=len(pack.of_kind("automation")),
                installed=pack.id in installed,
            )
        )
    return cards


async def installed_packs(db: AsyncSession) -> set[str]:
    return {p for p in catalog().packs if await _installation(db, p, required=False) is not None}


async def choose_packs(db: AsyncSession, principal: Principal, pack_ids: list[str]) -> Wizard:
    """Step 1: the packs to install (at least one, each on offer); 422 ``packs_required`` otherwise."""
    wizard = await load(db, principal)
    offered = catalog().packs
    unknown = [p for p in pack_ids if p not in offered]
    if not pack_ids or unknown:
        raise ValidationProblem(
            errors=[FieldProblem("/packs", "packs_required", "choose at least one pack from the list")]
        )
    wizard.packs = list(dict.fromkeys(pack_ids))
    wizard.step = max(wizard.step, 2)
    await save(db, principal, wizard)
    return wizard


def pack_roles(wizard: Wizard, language: str) -> list[PackRole]:
    """Every role of the chosen packs with the answer given so far (unassigned by default)."""
    found = []
    for pack_id in wizard.packs:
        pack = _pack(pack_id)
        for role in pack.roles:
            answer = wizard.roles.get(pack_id, {}).get(str(role["key"]), RoleAnswer())
            found.append(
                PackRole(
                    pack_id=pack_id,
                    pack_title=str(localize(pack.meta["title"], language)),
                    key=str(role["key"]),
                    title=str(localize(role["title"], language)),
                    description=str(localize(role.get("description") or "", language)),
                    answer=answer,
                )
            )
    return found


async def key_clashes(db: AsyncSession, wizard: Wizard, language: str) -> list[KeyClashOut]:
    """The chosen packs' collections whose key the workspace (or an earlier chosen pack) holds,
    each with a free key to install it under."""
    clashes: list[KeyClashOut] = []
    planned: set[str] = set()
    installed = await installed_packs(db)
    for pack_id in wizard.packs:
        if pack_id in installed:
            continue
        pack = _pack(pack_id)
        for item in pack.of_kind("collection"):
            if not await records.key_taken(db, item.key) and item.key not in planned:
                planned.add(item.key)
                continue
            try:
                existing_name = (await records.get_collection_by_key(db, item.key)).name
            except ProblemError:
                existing_name = item.key
            suggested = await records.free_key(db, item.key, planned)
            planned.add(suggested)
            clashes.append(
                KeyClashOut(
                    pack_id=pack_id,
                    key=item.key,
                    name=str(localize(item.data["name"], language)),
                    existing_name=existing_name,
                    suggested=suggested,
                )
            )
    return clashes


async def choose_roles(db: AsyncSession, principal: Principal, answers: dict[str, str], settings: Settings) -> Wizard:
    """Step 2: each role's answer (``role:<pack>:<key>`` → ``me`` / ``member`` / ``invite`` /
    ``none``, with ``member:<pack>:<key>`` and ``email:<pack>:<key>``), the sample choice and each
    key clash's choice (``clash:<pack>:<key>`` → ``use_existing`` / ``install_as``, with
    ``newkey:<pack>:<key>``). Every problem is listed; invitations go out once all is valid."""
    wizard = await load(db, principal)
    problems: list[FieldProblem] = []
    members = {str(row[0]) for row in await accounts.list_members(db, principal)}
    roles: dict[str, dict[str, RoleAnswer]] = {}
    invites: dict[str, list[str]] = {}  # email -> the pack roles it is invited to hold
    for role in pack_roles(wizard, "en"):
        name = f"{role.pack_id}:{role.key}"
        choice = answers.get(f"role:{name}", "none")
        answer = RoleAnswer()
        if choice == "me":
            answer = RoleAnswer("me", user_id=str(principal.user_id))
        elif choice == "member":
            user_id = answers.get(f"member:{name}", "")
            if user_id not in members:
                problems.append(FieldProblem(f"/member:{name}", "choose_member", "choose a member"))
            answer = RoleAnswer("member", user_id=user_id or None)
        elif choice == "invite":
            email = answers.get(f"email:{name}", "").strip()
            normalized, problem = accounts.normalize_email(email, f"/email:{name}")
            if problem is not None or normalized is None or len(email) > 254:
                problems.append(problem or FieldProblem(f"/email:{name}", "invalid_email", "enter an email address"))
            else:
                invites.setdefault(normalized, []).append(name)
            answer = RoleAnswer("invite", email=email or None)
        roles.setdefault(role.pack_id, {})[role.key] = answer
    collections: dict[str, dict[str, dict[str, str]]] = {}
    for clash in await key_clashes(db, wizard, "en"):
        name = f"{clash.pack_id}:{clash.key}"
        action = answers.get(f"clash:{name}", "install_as")
        if action == "use_existing":
            collections.setdefault(clash.pack_id, {})[clash.key] = {"action": "use_existing"}
            continue
        new_key = answers.get(f"newkey:{name}", clash.suggested).strip()
        if not records.KEY_RE.fullmatch(new_key) or await records.key_taken(db, new_key):
            problems.append(FieldProblem(f"/newkey:{name}", "key_unavailable", clash.suggested))
        collections.setdefault(clash.pack_id, {})[clash.key] = {"action": "install_as", "key": new_key}
    wizard.roles = roles
    wizard.collections = collections
    wizard.samples = answers.get("samples", "yes") == "yes"
    if problems:
        raise ValidationProblem(errors=problems)
    refused: list[FieldProblem] = []
    for email, held in invites.items():
        try:
            await accounts.invite_by_email(db, principal, email, settings, pack_roles=held)
        except ProblemError as exc:  # e.g. the address is a member's: said beside its first field
            at = f"/email:{held[0]}"
            refused += [FieldProblem(at, p.code, p.message) for p in exc.errors or []] or [
                FieldProblem(at, exc.code, exc.detail or exc.title)
            ]
    if refused:
        raise ValidationProblem(errors=refused)
    installed = await installed_packs(db)
    wizard.results = {
        p: {"status": "done" if p in installed else "pending", "reason": None, "items": len(_pack(p).items)}
        for p in wizard.packs
    }
    wizard.step = 3
    await save(db, principal, wizard)
    return wizard


async def give_role(db: AsyncSession, principal: Principal, pack_id: str, role: str, user_id: uuid.UUID) -> None:
    """Someone invited to hold ``role`` joined before its pack was installed: the wizard's answer
    becomes them, so the install gives them the role."""
    wizard = await load(db, principal)
    if pack_id not in wizard.packs:
        return
    wizard.roles.setdefault(pack_id, {})[role] = RoleAnswer("member", user_id=str(user_id))
    await save(db, principal, wizard)


def install_body(wizard: Wizard, pack_id: str) -> InstallIn:
    """The install the wizard's answers ask for: roles of invitees who have not joined yet, and
    unassigned roles, stay unassigned (an invitee is given theirs on joining)."""
    roles: dict[str, uuid.UUID | None] = {}
    for key, answer in wizard.roles.get(pack_id, {}).items():
        roles[key] = uuid.UUID(answer.user_id) if answer.choice in ("me", "member") and answer.user_id else None
    return InstallIn(
        roles=roles,
        samples=wizard.samples,
        collections={
            key: CollectionChoiceIn(action=c["action"], key=c.get("key"))  # type: ignore[arg-type]
            for key, c in wizard.collections.get(pack_id, {}).items()
        },
    )


async def install_next(db: AsyncSession, principal: Principal) -> Wizard:
    """Install the next pending pack (in a savepoint): it is done, or failed with its reason."""
    wizard = await load(db, principal)
    pending = [p for p in wizard.packs if wizard.results.get(p, {}).get("status") == "pending"]
    if not pending:
        return wizard
    pack_id = pending[0]
    result = wizard.results[pack_id]
    try:
        async with db.begin_nested():
            report = await install(db, principal, pack_id, install_body(wizard, pack_id))
        result.update(status="done", reason=None, unassigned=report.unassigned_roles, samples=report.samples)
    except ProblemError as exc:
        result.update(status="failed", reason=exc.detail or exc.title, code=exc.code)
    wizard.results[pack_id] = result
    if all(r.get("status") == "done" for r in wizard.results.values()):
        wizard.step = 4
    await save(db, principal, wizard)
    return wizard


async def retry(db: AsyncSession, principal: Principal, pack_id: str) -> Wizard:
    """Put a failed pack back in the queue."""
    wizard = await load(db, principal)
    result = wizard.results.get(pack_id)
    if result is not None and result.get("status") == "failed":
        result.update(status="pending", reason=None)
        await save(db, principal, wizard)
    return wizard


@dataclass(frozen=True)
class Progress:
    done: int  # items of the packs installed so far
    total: int
    finished: bool
    failed: bool


def progress(wizard: Wizard) -> Progress:
    results = [wizard.results.get(p, {}) for p in wizard.packs]
    done = sum(int(r.get("items", 0)) for r in results if r.get("status") == "done")
    total = sum(int(r.get("items", 0)) for r in results)
    return Progress(
        done=done,
        total=total,
        finished=bool(results) and all(r.get("status") in ("done", "failed") for r in results),
        failed=any(r.get("status") == "failed" for r in results),
    )


async def finish(db: AsyncSession, principal: Principal) -> Wizard:
    wizard = await load(db, principal)
    wizard.step = STEPS
    await save(db, principal, wizard)
    return wizard


def language_of(locale: str) -> str:
    return _language(locale)
