"""Listing the gallery and previewing a pack: its procedures as flowcharts, its collections and
automations, and the plugins it needs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.gallery import loader
from services.gallery.catalog import _language, _pack, catalog, localized_items
from services.gallery.loader import Pack
from services.gallery.models import TemplateInstallation
from services.gallery.schemas import (
    AutomationPreviewOut,
    ChangelogOut,
    CollectionPreviewOut,
    FlowEdgeOut,
    FlowNodeOut,
    PackPreviewOut,
    PackSummaryOut,
    ProcedurePreviewOut,
    RequiredPluginOut,
    RoleOut,
)
from services.marketplace import service as marketplace
from services.sops.definition import ApprovalStep, DecisionStep, Definition, ParallelStep, successors
from tenants.principal import Principal


def _summary(pack: Pack, installed: str | None) -> PackSummaryOut:
    meta = pack.meta
    upgradable = False
    if installed is not None:
        try:
            upgradable = Version(pack.version) > Version(installed)
        except InvalidVersion:
            upgradable = False
    return PackSummaryOut(
        id=pack.id,
        version=pack.version,
        industry=pack.industry,
        title=dict(meta["title"]),
        summary=dict(meta["summary"]),
        publisher=pack.publisher,
        plugin=pack.plugin,
        tags=list(meta.get("tags") or []),
        required_plugins=_required_names(pack),
        procedures=len(pack.of_kind("procedure")),
        collections=len(pack.of_kind("collection")),
        automations=len(pack.of_kind("automation")),
        installed_version=installed,
        upgrade_available=upgradable,
    )


def _required_names(pack: Pack) -> list[str]:
    names = [str(p["name"]) for p in pack.required_plugins]
    if pack.plugin is not None and pack.plugin not in names:
        names.insert(0, pack.plugin)
    return names


async def _installed_versions(db: AsyncSession) -> dict[str, str]:
    rows = await db.execute(select(TemplateInstallation.pack_id, TemplateInstallation.version))
    return {pack_id: version for pack_id, version in rows}


async def list_packs(
    db: AsyncSession,
    principal: Principal,
    *,
    industry: str | None = None,
    plugin: str | None = None,
    query: str | None = None,
) -> list[PackSummaryOut]:
    """The gallery: every pack on offer (filtered by industry, required plugin and text), with the
    version this workspace installed."""
    principal.require_tenant()
    installed = await _installed_versions(db)
    words = (query or "").lower().split()
    found: list[PackSummaryOut] = []
    for pack in catalog().packs.values():
        if industry and pack.industry != industry:
            continue
        if plugin and plugin not in _required_names(pack):
            continue
        if words:
            text = " ".join(
                [
                    pack.id,
                    pack.publisher,
                    *pack.meta["title"].values(),
                    *pack.meta["summary"].values(),
                    *(pack.meta.get("tags") or []),
                ]
            ).lower()
            if not all(word in text for word in words):
                continue
        found.append(_summary(pack, installed.get(pack.id)))
    return sorted(found, key=lambda p: (p.industry, p.id))


async def _required_plugins(db: AsyncSession, pack: Pack) -> list[RequiredPluginOut]:
    installed = await marketplace.installed_plugin_versions(db)
    listed = {str(p["name"]): p for p in pack.required_plugins}
    out: list[RequiredPluginOut] = []
    for name in _required_names(pack):
        entry = listed.get(name, {})
        versions = str(entry.get("versions") or "")
        why = dict(entry.get("why") or {"zh-CN": "提供此模板包的插件", "en": "the plugin that ships this pack"})
        version = installed.get(name)
        fits = version is not None and _in_range(version, versions)
        out.append(
            RequiredPluginOut(
                name=name,
                versions=versions,
                why=why,
                deployed=marketplace.loaded_plugin(name) is not None,
                installed=fits,
            )
        )
    return out


def _in_range(version: str, versions: str) -> bool:
    try:
        return not versions or SpecifierSet(versions).contains(Version(version), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return False


async def get_pack(db: AsyncSession, principal: Principal, pack_id: str, language: str | None = None) -> PackPreviewOut:
    """A pack's preview: its procedures as flowcharts, steps, collections, automations and what it needs."""
    principal.require_tenant()
    pack = _pack(pack_id)
    if language is None:
        language = (await accounts.current_tenant(db, principal)).locale
    language = _language(language)
    items = localized_items(pack, language)
    installed = (await _installed_versions(db)).get(pack.id)
    roles = {r["key"]: loader.localize(r["title"], language) for r in pack.roles}
    procedures_out = [_procedure_preview(items[("procedure", i.key)], roles) for i in pack.of_kind("procedure")]
    collections_out = [
        CollectionPreviewOut(
            key=i.key,
            name=items[("collection", i.key)]["name"],
            fields=items[("collection", i.key)]["fields"],
            samples=len(i.data.get("samples") or []),
        )
        for i in pack.of_kind("collection")
    ]
    automations_out = []
    for item in pack.of_kind("automation"):
        data = items[("automation", item.key)]
        trigger = data["trigger"]
        used = sorted(
            {str(a.get("plugin")) for a in data["actions"] if a.get("kind") == "plugin"}
            | ({str(trigger.get("plugin"))} if trigger.get("type") == "plugin" else set())
        )
        automations_out.append(
            AutomationPreviewOut(
                key=item.key,
                name=data["name"],
                description=data["description"],
                trigger=str(trigger.get("type")),
                plugins=used,
            )
        )
    return PackPreviewOut(
        pack=_summary(pack, installed),
        language=language,
        roles=[RoleOut(key=r["key"], title=dict(r["title"]), description=r.get("description")) for r in pack.roles],
        required_plugins=await _required_plugins(db, pack),
        procedures=procedures_out,
        collections=collections_out,
        automations=automations_out,
        documents=[items[("document", i.key)]["title"] for i in pack.of_kind("document")],
        changelog=[
            ChangelogOut(version=e["version"], date=e.get("date"), changes=dict(e["changes"]))
            for e in pack.meta["changelog"]
        ],
    )


def _owner_label(owner: Mapping[str, Any], roles: Mapping[str, str]) -> str:
    user = str(owner.get("user_id") or "")
    if user.startswith("@role:"):
        return roles.get(user.removeprefix("@role:"), user)
    return str(owner.get("role") or owner.get("field") or owner.get("kind"))


def _definition(data: dict[str, Any]) -> Definition:
    raw = loader.resolve(data["definition"], lambda kind, key: str(loader.check_id(kind, key)))
    return msgspec.convert(raw, Definition)


def pack_definitions(pack_id: str, language: str) -> dict[str, Definition]:
    """A pack's procedures as definitions in ``language``, by key: what their flowcharts are drawn from."""
    pack = _pack(pack_id)
    items = localized_items(pack, _language(language))
    return {i.key: _definition(items[("procedure", i.key)]) for i in pack.of_kind("procedure")}


def _procedure_preview(data: dict[str, Any], roles: Mapping[str, str]) -> ProcedurePreviewOut:
    definition = _definition(data)
    nodes: list[FlowNodeOut] = []
    edges: list[FlowEdgeOut] = []
    for raw_step, step in zip(data["definition"]["steps"], definition.steps, strict=True):
        owner = raw_step.get("owner")
        due = raw_step.get("due", {}).get("within") if isinstance(raw_step.get("due"), dict) else None
        nodes.append(
            FlowNodeOut(
                key=step.key,
                kind=raw_step["kind"],
                title=step.title,
                owner=_owner_label(owner, roles) if isinstance(owner, dict) else None,
                due=_duration_text(due) if isinstance(due, dict) else None,
            )
        )
        labels: dict[str, str] = {}
        if isinstance(step, DecisionStep):
            labels = {b.next: b.when for b in step.branches if b.next}
            if step.default:
                labels.setdefault(step.default, "else")
        elif isinstance(step, ApprovalStep) and step.on_reject.goto:
            labels = {step.on_reject.goto: "rejected"}
        normal = successors(step, fallbacks=False)
        for target in normal:
            edges.append(FlowEdgeOut(source=step.key, target=target, label=labels.get(target, "")))
        for target in successors(step):
            if target not in normal:
                edges.append(FlowEdgeOut(source=step.key, target=target, label="exception"))
    return ProcedurePreviewOut(
        key=data["key"],
        title=data["title"],
        purpose=data["purpose"],
        collection=data.get("collection"),
        steps=nodes,
        edges=edges,
        mermaid=_mermaid(definition, nodes, edges),
    )


def _duration_text(within: Mapping[str, Any]) -> str:
    parts = [f"{within[unit]}{unit[0]}" for unit in ("days", "hours", "minutes") if within.get(unit)]
    return " ".join(parts) + ("" if within.get("business", True) is False else " (business)")


def _mermaid(definition: Definition, nodes: list[FlowNodeOut], edges: list[FlowEdgeOut]) -> str:
    def text(value: str) -> str:
        return value.replace('"', "#quot;").replace("\n", " ")

    lines = ["flowchart TD", "  start_((start)) --> " + definition.start]
    for node in nodes:
        label = text(node.title + (f"<br/>{node.owner}" if node.owner else ""))
        step = definition.step(node.key)
        if isinstance(step, DecisionStep):
            lines.append(f'  {node.key}{{"{label}"}}')
        elif isinstance(step, ParallelStep):
            lines.append(f'  {node.key}[["{label}"]]')
        else:
            lines.append(f'  {node.key}["{label}"]')
    for edge in edges:
        arrow = "-.->" if edge.label == "exception" else "-->"
        label = f'|"{text(edge.label)}"|' if edge.label else ""
        lines.append(f"  {edge.source} {arrow}{label} {edge.target}")
    return "\n".join(lines)
