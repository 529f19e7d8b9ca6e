"""The template gallery: listing and previewing packs, installing them into a workspace, upgrading
an installed pack with a three-way merge, and uninstalling it.

This module is the service's public entry, the one the routes and the rest of the platform use; the
work is done by its siblings: ``catalog`` (the packs on offer), ``listing`` (the gallery and a pack's
preview), ``install`` (installing, and the installations a workspace holds), ``roles`` (who holds
each pack role, handing one over; registered with the accounts service), ``upgrade`` and
``uninstall``.
"""

from __future__ import annotations

from services.gallery.catalog import (
    BUILTIN_PACKS,
    LOCAL_PUBLISHER,
    PLATFORM_PUBLISHER,
    Catalog,
    RefusedPack,
    catalog,
    configure,
    localized_items,
    pack_sources,
    schema_document,
)
from services.gallery.install import (
    NDJSON,
    Progress,
    get_installation,
    install,
    install_stream,
    installation_out,
    list_installations,
)
from services.gallery.listing import get_pack, list_packs, pack_definitions
from services.gallery.roles import assign_role, installed_roles
from services.gallery.uninstall import uninstall
from services.gallery.upgrade import upgrade

__all__ = [
    "BUILTIN_PACKS",
    "LOCAL_PUBLISHER",
    "NDJSON",
    "PLATFORM_PUBLISHER",
    "Catalog",
    "Progress",
    "RefusedPack",
    "assign_role",
    "catalog",
    "configure",
    "get_installation",
    "get_pack",
    "install",
    "install_stream",
    "installation_out",
    "installed_roles",
    "list_installations",
    "list_packs",
    "localized_items",
    "pack_definitions",
    "pack_sources",
    "schema_document",
    "uninstall",
    "upgrade",
]
