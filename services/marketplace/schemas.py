"""Request and response bodies of the marketplace."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec

from services.schema_docs import documented
from tenants.errors import FieldProblem


class VersionOut(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    kind: str
    api_range: str
    scopes: list[str]
    status: str
    submitted_at: datetime
    review_reason: str | None = None
    # An in-process version is installable only where this deployment runs that version's code.
    available: bool


class ListingOut(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    publisher: str
    category: str
    summary: dict[str, str]
    pricing: str
    kind: str
    latest_version: str
    scopes: list[str]
    settings_schema: dict[str, Any] | None
    actions: list[dict[str, Any]]
    triggers: list[dict[str, Any]]
    versions: list[VersionOut]
    installed_version: str | None = None


class CircuitOut(msgspec.Struct, frozen=True, kw_only=True):
    consecutive_failures: int
    open_until: datetime | None
    last_error: str | None


class InstallationOut(msgspec.Struct, frozen=True, kw_only=True):
    plugin: str
    version: str
    previous_version: str | None
    pinned: bool
    enabled: bool
    granted_scopes: list[str]
    granted_collections: list[str]
    config: dict[str, Any]
    # Secret settings, masked: a field that is set shows a mask, never its value.
    secrets: dict[str, str | None]
    upgrade_available: str | None
    circuit: CircuitOut
    health: dict[str, Any] | None  # the last check: ok, message, checked_at
    installed_at: datetime
    updated_at: datetime


class InstallIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``scopes``: the scopes the admin consents to (all the version requires);
    ``collections``: keys of the collections the plugin may read and write."""

    scopes: list[str]
    version: str | None = None
    collections: list[str] = msgspec.field(default_factory=list)
    config: dict[str, Any] = msgspec.field(default_factory=dict)


class ConfigIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """New settings: a field left out keeps its value; a secret set to null is removed."""

    values: dict[str, Any]


class PinIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pinned: bool


class UpgradeIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``version`` defaults to the latest installable; ``scopes`` consents to the new version's."""

    version: str | None = None
    scopes: list[str] | None = None
    dry_run: bool = False


class UpgradePlanOut(msgspec.Struct, frozen=True, kw_only=True):
    plugin: str
    from_version: str
    to_version: str
    added_scopes: list[str]
    removed_scopes: list[str]
    added_actions: list[str]
    removed_actions: list[str]
    problems: list[FieldProblem]
    applied: bool


class UninstallPreviewOut(msgspec.Struct, frozen=True, kw_only=True):
    plugin: str
    deleted: list[str]
    kept: list[str]
    automations_affected: int
    with_delete_data: str


class SubmissionOut(msgspec.Struct, frozen=True, kw_only=True):
    plugin: str
    version: str
    kind: str
    status: str  # checking | pending | approved | rejected
    check_report: dict[str, Any] | None
    review_reason: str | None
    submitted_at: datetime
    reviewed_at: datetime | None


class RemoteSubmissionIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    manifest: dict[str, Any]


class RemoteSubmissionOut(msgspec.Struct, frozen=True, kw_only=True):
    submission: SubmissionOut
    # Shown once: the plugin's service checks every request's signature with it.
    signing_secret: str


class ReviewIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: str = ""


class PublisherIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant_id: uuid.UUID
    name: Annotated[str, documented(min_length=1, max_length=200, description="the name its listings show")]


class PublisherOut(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: uuid.UUID
    name: str
