"""The Guiju plugin SDK.

This package is the only thing a Guiju plugin imports. It carries:

- :data:`API_VERSION`, the version of the plugin API that this SDK describes;
- :data:`hookimpl`, the marker a plugin puts on its hook implementations;
- :class:`GuijuSpec`, the hook specifications the host calls;
- :class:`PluginInfo`, the manifest a plugin registers about itself;
- :class:`ActionCall` and :class:`ActionFailed`, what a plugin action receives and may raise;
- :class:`PluginContext`, the only thing a plugin's code touches (tenant data within its grant,
  messages, events, configuration and secrets, HTTP to its declared hosts, files, logging);
- :mod:`guiju_sdk.testing`, a fake context and a harness for a plugin's own tests;
- :mod:`guiju_sdk.manifest`, the JSON manifest a publisher submits (:data:`MANIFEST_SCHEMA`,
  :func:`manifest_problems`, :func:`manifest_from_plugin`);
- :mod:`guiju_sdk.remote`, the protocol of a remote plugin (an HTTP service in any language) and
  the signature of its requests (:func:`sign`, :func:`verify`, :func:`parse_action_answer`).

A plugin is a distribution that declares an entry point in the group ``guiju``
(see :data:`ENTRY_POINT_GROUP`) pointing at a module or object holding hook
implementations.
"""

from guiju_sdk.context import HttpResponse, PluginContext, RecordRejected, ScopeDenied, StoredFile
from guiju_sdk.hookspecs import GuijuSpec, hookimpl, hookspec
from guiju_sdk.manifest import (
    CATEGORIES,
    MANIFEST_SCHEMA,
    SCOPES,
    manifest_from_plugin,
    manifest_problems,
    plugin_name_problem,
    scope_problem,
)
from guiju_sdk.remote import (
    ACTION_PATH,
    HEALTH_PATH,
    NonceCache,
    SignatureInvalid,
    action_request_body,
    parse_action_answer,
    parse_health_answer,
    sign,
    verify,
)
from guiju_sdk.types import (
    ActionCall,
    ActionFailed,
    ActionHandler,
    Document,
    DocumentGenerator,
    Health,
    PluginInfo,
    Register,
    RegisterAction,
    RegisterDocumentKind,
    RegisterHealth,
    RegisterSettingsSchema,
    RegisterTemplatePack,
    RegisterTrigger,
    TriggerPoll,
)
from guiju_sdk.version import API_VERSION, ENTRY_POINT_GROUP, PROJECT_NAME, api_version_supported

__all__ = [
    "ACTION_PATH",
    "API_VERSION",
    "CATEGORIES",
    "ENTRY_POINT_GROUP",
    "HEALTH_PATH",
    "MANIFEST_SCHEMA",
    "PROJECT_NAME",
    "SCOPES",
    "ActionCall",
    "ActionFailed",
    "ActionHandler",
    "Document",
    "DocumentGenerator",
    "GuijuSpec",
    "Health",
    "HttpResponse",
    "NonceCache",
    "PluginContext",
    "PluginInfo",
    "RecordRejected",
    "Register",
    "RegisterAction",
    "RegisterDocumentKind",
    "RegisterHealth",
    "RegisterSettingsSchema",
    "RegisterTemplatePack",
    "RegisterTrigger",
    "ScopeDenied",
    "SignatureInvalid",
    "StoredFile",
    "TriggerPoll",
    "action_request_body",
    "api_version_supported",
    "hookimpl",
    "hookspec",
    "manifest_from_plugin",
    "manifest_problems",
    "parse_action_answer",
    "parse_health_answer",
    "plugin_name_problem",
    "scope_problem",
    "sign",
    "verify",
]
