"""Request and response bodies of the template gallery API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

LocalText = dict[str, str]  # {"zh-CN": …, "en": …}


class Input(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: unknown fields are refused rather than silently ignored."""


class CollectionChoiceIn(Input):
    """What to do with a pack's collection whose key the workspace already holds: ``use_existing``
    (the pack's procedures and automations work on the workspace's collection; nothing is created)
    or ``install_as`` a new ``key`` (every reference of the pack follows it)."""

    action: Literal["use_existing", "install_as"]
    key: str | None = None


class InstallIn(Input):
    """``roles`` maps each of the pack's roles to a member (user id); a role left out, or mapped to
    null, stays unassigned: its steps are assigned to nobody (an admin reassigns them) and never
    silently to the owner. ``language`` defaults to the workspace's. ``collections`` decides each
    collection key clash by the pack's collection key (409 ``template_name_conflicts`` lists the
    clashes, with a suggested free key, when one is left undecided)."""

    version: str | None = None
    roles: dict[str, uuid.UUID | None] = {}
    language: Literal["zh-CN", "en"] | None = None
    samples: bool = True
    collections: dict[str, CollectionChoiceIn] = {}


class UpgradeIn(Input):
    """``resolutions`` decides each conflict by its id (``procedure:order_fulfilment/steps/pick/title``)."""

    dry_run: bool = True
    resolutions: dict[str, Literal["ours", "theirs"]] = {}


class UninstallIn(Input):
    """``delete_data`` also deletes the records of the pack's collections (runs are always kept)."""

    delete_data: bool = False
    confirm: str | None = None  # the pack's id, required with delete_data


class RequiredPluginOut(msgspec.Struct, kw_only=True):
    name: str
    versions: str
    why: LocalText
    deployed: bool  # this server runs the plugin
    installed: bool  # the workspace installed (and enabled) it


class RoleOut(msgspec.Struct, kw_only=True):
    key: str
    title: LocalText
    description: LocalText | None = None


class PackSummaryOut(msgspec.Struct, kw_only=True):
    id: str
    version: str
    industry: str
    title: LocalText
    summary: LocalText
    publisher: str
    plugin: str | None
    tags: list[str]
    required_plugins: list[str]
    procedures: int
    collections: int
    automations: int
    installed_version: str | None
    upgrade_available: bool


class FlowNodeOut(msgspec.Struct, kw_only=True):
    key: str
    kind: str
    title: str
    owner: str | None = None  # the pack role or owner kind
    due: str | None = None


class FlowEdgeOut(msgspec.Struct, kw_only=True):
    source: str
    target: str
    label: str = ""


class ProcedurePreviewOut(msgspec.Struct, kw_only=True):
    key: str
    title: str
    purpose: str
    collection: str | None
    steps: list[FlowNodeOut]
    edges: list[FlowEdgeOut]
    mermaid: str  # the flowchart as Mermaid source


class CollectionPreviewOut(msgspec.Struct, kw_only=True):
    key: str
    name: str
    fields: list[dict[str, Any]]
    samples: int


class AutomationPreviewOut(msgspec.Struct, kw_only=True):
    key: str
    name: str
    description: str
    trigger: str
    plugins: list[str]


class ChangelogOut(msgspec.Struct, kw_only=True):
    version: str
    date: str | None
    changes: LocalText


class PackPreviewOut(msgspec.Struct, kw_only=True):
    pack: PackSummaryOut
    language: str
    roles: list[RoleOut]
    required_plugins: list[RequiredPluginOut]
    procedures: list[ProcedurePreviewOut]
    collections: list[CollectionPreviewOut]
    automations: list[AutomationPreviewOut]
    documents: list[str]
    changelog: list[ChangelogOut]


class ProgressOut(msgspec.Struct, kw_only=True):
    """One step of an install or upgrade, as it happens."""

    event: Literal["started", "item", "finished"]
    stage: str
    item: str | None = None
    done: int = 0
    total: int = 0


class RoleAssignmentOut(msgspec.Struct, kw_only=True):
    """A pack role and its member; ``unassigned`` (user_id null) means nobody can claim its steps
    until an admin assigns them."""

    role: str
    user_id: uuid.UUID | None
    unassigned: bool


class KeyClashOut(msgspec.Struct, kw_only=True):
    """A pack's collection whose key the workspace already holds, and a free key to install it under."""

    pack_id: str
    key: str
    name: str  # the pack's collection, in the language asked for
    existing_name: str
    suggested: str


class InstalledItemOut(msgspec.Struct, kw_only=True):
    kind: str
    key: str
    object_id: uuid.UUID
    note: str | None = None
    installed_key: str | None = None  # a collection installed under another key, or the existing one used


class InstallReportOut(msgspec.Struct, kw_only=True):
    pack_id: str
    version: str
    changed: bool  # False when the pack was already installed at this version
    language: str
    roles: list[RoleAssignmentOut]
    items: list[InstalledItemOut]
    missing_plugins: list[RequiredPluginOut]
    notes: list[str]
    progress: list[ProgressOut]
    unassigned_roles: list[str] = []
    samples: int = 0  # sample records added (marked as samples)


class InstallationOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    pack_id: str
    publisher: str
    version: str
    language: str
    roles: dict[str, str]
    items: list[InstalledItemOut]
    latest_version: str | None
    created_at: datetime
    updated_at: datetime


class ChangeOut(msgspec.Struct, kw_only=True):
    id: str  # "<kind>:<key><path>"
    before: Any
    after: Any


class ConflictOut(msgspec.Struct, kw_only=True):
    id: str
    base: Any
    theirs: Any
    ours: Any
    absent: list[str]  # the sides on which the value was removed


class ItemPlanOut(msgspec.Struct, kw_only=True):
    kind: str
    key: str
    action: Literal["update", "unchanged", "create", "remove", "keep", "recreate"]
    note: str | None = None
    changes: list[ChangeOut] = []
    conflicts: list[ConflictOut] = []
    kept: list[str] = []


class UpgradeReportOut(msgspec.Struct, kw_only=True):
    pack_id: str
    from_version: str
    to_version: str
    dry_run: bool
    applied: bool
    items: list[ItemPlanOut]
    conflicts: int
    unresolved: list[str]
    missing_plugins: list[RequiredPluginOut]
    progress: list[ProgressOut] = []


class UninstallReportOut(msgspec.Struct, kw_only=True):
    pack_id: str
    removed: list[InstalledItemOut]
    kept: list[InstalledItemOut]
    records_deleted: int
