"""The action kinds of automations: what each one checks at save time and does at run time.

The executor (services.automation.executor) runs one action at a time through ``action_kind(name)``.
Effects in our database happen in the session it passes, in the same transaction that records the
action as done: a worker killed mid-action rolls both back, and a redelivery never repeats the effect.
External effects (webhooks, plugin actions) carry ``ctx.idempotency_key``.

This module is the public entry: the registry of kinds, and the names the rest of automation uses.
The work is done by its siblings: ``action_base`` (the contract, config expressions and templates,
the shared behaviour of a kind), ``database_actions`` (the kinds whose effects are writes to our
database) and ``outbound_actions`` (the kinds that call out: webhook, plugin).
"""

from __future__ import annotations

from services.automation.action_base import (
    DEFAULT_QUEUE,
    ActionContext,
    ActionKind,
    FailureFollowUp,
    PermanentActionError,
    RetryableActionError,
    ValidationEnv,
    Wait,
    evaluation_context,
    event_view,
    expression_problems,
    is_expression,
    render,
    resolve,
    template_problem,
)
from services.automation.database_actions import (
    LANGUAGES,
    AssignStep,
    CreateRecord,
    Notify,
    StartRun,
    UpdateRecord,
    WaitAction,
)
from services.automation.outbound_actions import (
    MAX_RESPONSE_KEPT,
    SIGNATURE_HEADER,
    WEBHOOK_TIMEOUT_SECONDS,
    IPAddress,
    PluginActionKind,
    Webhook,
    address_refusal,
    http_allowed_hosts,
    pinned_target,
    resolve_public,
    retry_after_seconds,
    sign,
    url_problem,
)

__all__ = [
    "ACTION_KINDS",
    "DEFAULT_QUEUE",
    "LANGUAGES",
    "MAX_RESPONSE_KEPT",
    "SIGNATURE_HEADER",
    "WEBHOOK_TIMEOUT_SECONDS",
    "ActionContext",
    "ActionKind",
    "AssignStep",
    "CreateRecord",
    "FailureFollowUp",
    "IPAddress",
    "Notify",
    "PermanentActionError",
    "PluginActionKind",
    "RetryableActionError",
    "StartRun",
    "UpdateRecord",
    "ValidationEnv",
    "Wait",
    "WaitAction",
    "Webhook",
    "action_kind",
    "address_refusal",
    "evaluation_context",
    "event_view",
    "expression_problems",
    "http_allowed_hosts",
    "is_expression",
    "pinned_target",
    "render",
    "resolve",
    "resolve_public",
    "retry_after_seconds",
    "sign",
    "template_problem",
    "url_problem",
]

# ---------------------------------------------------------------- the registry

ACTION_KINDS: dict[str, ActionKind] = {
    kind.name: kind
    for kind in (
        StartRun(),
        CreateRecord(),
        UpdateRecord(),
        AssignStep(),
        Notify(),
        Webhook(),
        WaitAction(),
        PluginActionKind(),
    )
}


def action_kind(name: str) -> ActionKind:
    """The action kind called ``name``; raises KeyError."""
    return ACTION_KINDS[name]
