"""Calling plugins: the host's ``PluginContext``, in-process and remote actions, the circuit breaker.

Plugin code runs only in workers (the automation executor calls :func:`call_action` on the plugin's
own queue). Every call gets a context bound to one tenant and to what its admin granted: a plugin
cannot reach another tenant's data or a collection it was not granted, whatever it asks for.

This module is the host's entry for the other services, the actors and the app; its parts live in
``context`` (the context given to plugins), ``calls`` (calling an action, the circuit breaker),
``hooks`` (lifecycle hooks, health checks, polled triggers) and ``platform_mail`` (the platform's
own mail through the messaging plugin).
"""

from __future__ import annotations

from services.marketplace.calls import (
    MAX_ERROR_KEPT,
    DeclaredAction,
    PluginCallFailed,
    RunnableVersion,
    call_action,
    call_remote,
    checked_output,
    count_failure,
    runnable_version,
)
from services.marketplace.context import HostContext
from services.marketplace.hooks import (
    HOOK_EVENTS,
    MAX_POLLED_EVENTS,
    check_health,
    handle_marketplace_event,
    poll_trigger,
    run_lifecycle_hook,
    send_notification_on,
)
from services.marketplace.platform_mail import (
    PLATFORM_MAIL_ACTION,
    SMTP_SECURITY,
    PlatformContext,
    PlatformMailTransport,
    smtp_settings,
    use_platform_mail,
)

__all__ = [
    "HOOK_EVENTS",
    "MAX_ERROR_KEPT",
    "MAX_POLLED_EVENTS",
    "PLATFORM_MAIL_ACTION",
    "SMTP_SECURITY",
    "DeclaredAction",
    "HostContext",
    "PlatformContext",
    "PlatformMailTransport",
    "PluginCallFailed",
    "RunnableVersion",
    "call_action",
    "call_remote",
    "check_health",
    "checked_output",
    "count_failure",
    "handle_marketplace_event",
    "poll_trigger",
    "run_lifecycle_hook",
    "runnable_version",
    "send_notification_on",
    "smtp_settings",
    "use_platform_mail",
]
