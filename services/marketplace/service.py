"""The marketplace: loading plugins, the catalog, and each tenant's installed plugins.

Loading: entry points of the group ``guiju``, checked against the SDK's API version. A plugin that
fails to import, lacks a manifest, or declares an API range excluding ours is refused with its
reason; the others load. Allow- and deny-lists come from settings.

The catalog lists plugin versions (deployed by the operator, or submitted by publishers and
approved). A tenant's admin installs a version after consenting to its scopes, configures it
(validated against its settings schema; secrets encrypted), pins, upgrades, rolls back, disables
and uninstalls it. Only a tenant's installed, enabled plugins exist for its automations.

This module is the marketplace's entry for the other services, the routes and the app; its parts
live in ``loading`` (loading plugins, the plugins this process loaded), ``configuration`` (the
settings and the secrets' key ring), ``versions`` (manifests, versions, the deployed plugins
listed), ``catalog`` (the listings), ``installations`` (install, configure, enable, pin),
``upgrades`` (upgrade, rollback, uninstall), ``tenant_plugins`` (what a tenant's automations may
use), ``key_rotation``, ``numbering`` (sequences for plugins) and ``messaging`` (notifications sent
on through the messaging plugin).
"""

from __future__ import annotations

from services.marketplace.catalog import get_listing, list_catalog
from services.marketplace.configuration import configure, keyring, settings
from services.marketplace.installations import (
    HEALTH_REQUESTED,
    MASK,
    POLL_DUE,
    config_problems,
    configure_installation,
    get_installation,
    install,
    installation_out,
    list_installations,
    request_health_check,
    set_enabled,
    set_pinned,
)
from services.marketplace.key_rotation import platform_secret_context, rotate_secrets
from services.marketplace.loading import (
    MAX_ACTION_TIME_LIMIT_MS,
    LoadedPlugin,
    PluginAction,
    activate,
    collect_actions,
    installed_plugin_names,
    installed_plugin_versions,
    load_plugins,
    loaded_plugin,
    new_plugin_manager,
    plugin_actions,
    plugin_info,
    plugin_manager,
    poll_seconds,
    runnable_cache,
    template_pack_sources,
)
from services.marketplace.messaging import (
    MESSAGING_NOTIFY_ACTION,
    MESSAGING_PLUGIN,
    NOTIFICATION_FORWARDED,
    forward_notification,
    messaging_installed,
)
from services.marketplace.numbering import next_number
from services.marketplace.tenant_plugins import TenantPlugins, platform_actions, tenant_catalog
from services.marketplace.upgrades import (
    PluginDependents,
    register_dependents,
    rollback,
    uninstall,
    uninstall_preview,
    upgrade,
)
from services.marketplace.versions import (
    list_deployed_plugins,
    manifest_scopes,
    runs_here,
    sync_deployed_plugins,
    version_available,
    version_key,
)

__all__ = [
    "HEALTH_REQUESTED",
    "MASK",
    "MAX_ACTION_TIME_LIMIT_MS",
    "MESSAGING_NOTIFY_ACTION",
    "MESSAGING_PLUGIN",
    "NOTIFICATION_FORWARDED",
    "POLL_DUE",
    "LoadedPlugin",
    "PluginAction",
    "PluginDependents",
    "TenantPlugins",
    "activate",
    "collect_actions",
    "config_problems",
    "configure",
    "configure_installation",
    "forward_notification",
    "get_installation",
    "get_listing",
    "install",
    "installation_out",
    "installed_plugin_names",
    "installed_plugin_versions",
    "keyring",
    "list_catalog",
    "list_deployed_plugins",
    "list_installations",
    "load_plugins",
    "loaded_plugin",
    "manifest_scopes",
    "messaging_installed",
    "new_plugin_manager",
    "next_number",
    "platform_actions",
    "platform_secret_context",
    "plugin_actions",
    "plugin_info",
    "plugin_manager",
    "poll_seconds",
    "register_dependents",
    "request_health_check",
    "rollback",
    "rotate_secrets",
    "runnable_cache",
    "runs_here",
    "set_enabled",
    "set_pinned",
    "settings",
    "sync_deployed_plugins",
    "template_pack_sources",
    "tenant_catalog",
    "uninstall",
    "uninstall_preview",
    "upgrade",
    "version_available",
    "version_key",
]
