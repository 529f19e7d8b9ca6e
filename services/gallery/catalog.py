"""The gallery's catalog: the template packs on offer, each checked once, and their items in a language.

Packs are the platform's own (``services/gallery/packs``), the operator's (``GUIJU_TEMPLATE_PACKS``)
and those plugins ship through the SDK's ``guiju_templates`` hook; a pack that fails its checks is
not offered, and its problems are kept for the operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.gallery import loader
from services.gallery.loader import LANGUAGES, Pack, PackInvalid
from services.marketplace import service as marketplace
from services.settings import Settings
from tenants.errors import FieldProblem, NotFound

BUILTIN_PACKS = Path(__file__).with_name("packs")
PLATFORM_PUBLISHER = "Guiju"
LOCAL_PUBLISHER = "Local"


@dataclass(frozen=True)
class RefusedPack:
    """A pack that failed its checks: not listed, not installable; its problems are kept for the operator."""

    directory: Path
    publisher: str
    problems: list[FieldProblem]


@dataclass(frozen=True)
class Catalog:
    packs: dict[str, Pack]
    refused: list[RefusedPack]


_catalogs: dict[tuple[tuple[str, str, str | None, int], ...], Catalog] = {}
_local_directories: list[Path] = []


def configure(settings: Settings) -> None:
    """Offer the operator's own packs (``GUIJU_TEMPLATE_PACKS``) too."""
    _local_directories[:] = [Path(d).expanduser() for d in settings.template_packs]


def _packs_in(directory: Path, publisher: str) -> list[tuple[Path, str, str | None]]:
    if not directory.is_dir():
        return []
    return [(path, publisher, None) for path in sorted(directory.iterdir()) if path.is_dir()]


def pack_sources() -> list[tuple[Path, str, str | None]]:
    """Every pack directory: the platform's own, the operator's, then those of the loaded plugins."""
    sources = _packs_in(BUILTIN_PACKS, PLATFORM_PUBLISHER)
    for directory in _local_directories:
        sources += _packs_in(directory, LOCAL_PUBLISHER)
    return sources + [(path, publisher, plugin) for path, publisher, plugin in marketplace.template_pack_sources()]


def catalog() -> Catalog:
    """The packs on offer, each checked once per process (and again when the plugins change)."""
    sources = pack_sources()
    # A pack whose pack.yaml changed (a new version put in place) is read again.
    key = tuple((str(path), publisher, plugin, _stamp(path)) for path, publisher, plugin in sources)
    found = _catalogs.get(key)
    if found is None:
        found = _load_catalog(sources)
        _catalogs.clear()
        _catalogs[key] = found
    return found


def _stamp(directory: Path) -> int:
    try:
        return (directory / "pack.yaml").stat().st_mtime_ns
    except OSError:
        return 0


def _load_catalog(sources: list[tuple[Path, str, str | None]]) -> Catalog:
    packs: dict[str, Pack] = {}
    refused: list[RefusedPack] = []
    for directory, publisher, plugin in sources:
        try:
            pack = loader.load_pack(directory, publisher=publisher, plugin=plugin)
        except PackInvalid as exc:
            refused.append(RefusedPack(directory, publisher, list(exc.errors or [])))
            continue
        if pack.id in packs:
            first = packs[pack.id]
            problem = FieldProblem.of(
                "pack.yaml#/id",
                "duplicate_pack",
                "the pack '{id}' is already offered by {publisher}",
                id=pack.id,
                publisher=first.publisher,
            )
            refused.append(RefusedPack(directory, publisher, [problem]))
            continue
        packs[pack.id] = pack
    return Catalog(packs, refused)


def _pack(pack_id: str) -> Pack:
    pack = catalog().packs.get(pack_id)
    if pack is None:
        raise NotFound("No template pack '{pack_id}' in the gallery.", code="template_pack_not_found", pack_id=pack_id)
    return pack


_localized: dict[tuple[int, str], dict[tuple[str, str], dict[str, Any]]] = {}


def localized_items(pack: Pack, language: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Each item of ``pack`` in ``language``, owners naming pack roles as members (references unresolved)."""
    key = (id(pack), language)
    found = _localized.get(key)
    if found is None:
        found = {(i.kind, i.key): loader.localize(loader.owners_as_members(i.data), language) for i in pack.items}
        if len(_localized) > 256:
            _localized.clear()
        _localized[key] = found
    return found


def _language(value: str | None) -> str:
    return value if value in LANGUAGES else LANGUAGES[0]


def schema_document() -> dict[str, Any]:
    """The published JSON Schema of a pack's files."""
    return loader.pack_schema()
