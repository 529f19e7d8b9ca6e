"""What the OpenAPI document cannot read from a handler's signature: the domain errors each
operation's service raises, the bodies a handler reads itself, and media types beyond JSON.

Keys are ``METHOD /path`` as the document writes them. The generic problems (401, CSRF, 404 for an
unknown id form, a body's 400/413/415/422, a query's 422) are derived in
:mod:`services.openapi.document`; list here only the codes the operation's service adds. A test
checks that every key names an operation of the document.
"""

from __future__ import annotations

from typing import Literal

from litestar.openapi.spec import OpenAPIType, Schema

Codes = tuple[str, ...]
# json: a JSON body decoded by Litestar (``data``); json_object: any JSON object the handler reads
# itself; upload: multipart/form-data with the file in the field ``file``.
Body = Literal["json", "json_object", "upload"]

WORKSPACE: Codes = ("no_tenant_selected",)
ROLE: Codes = ("no_tenant_selected", "role_required")
PUBLISHER: Codes = ("no_tenant_selected", "not_a_publisher", "role_required")
TOKEN: Codes = ("token_expired", "token_invalid", "token_used")
ADMIN: Codes = ("email_not_verified",)
ADMIN_RECENT: Codes = ("email_not_verified", "reauthentication_required")
# What every action on a step of a run may meet: the run or step gone, the step not in a state
# that allows it, someone else's change at the same moment, a procedure that cannot advance.
STEP_403: Codes = ("no_tenant_selected", "not_step_owner")
STEP_404: Codes = ("run_not_found", "step_not_found")
STEP_409: Codes = ("run_finished", "step_not_open", "wrong_step_kind", "step_blocked_by_exception", "step_conflict")
ADVANCE_422: Codes = ("runaway_loop", "unknown_step")

DOMAIN_PROBLEMS: dict[str, dict[int, Codes]] = {
    # accounts
    "POST /api/v1/auth/signup": {409: ("email_taken", "slug_taken", "signup_conflict")},
    "POST /api/v1/auth/login": {401: ("invalid_credentials",), 429: ("login_rate_limited",)},
    "POST /api/v1/auth/switch-tenant": {404: ("tenant_not_found",)},
    "POST /api/v1/auth/verify-email": {410: TOKEN},
    "POST /api/v1/auth/resend-verification": {409: ("already_verified",), 429: ("mail_rate_limited",)},
    "POST /api/v1/auth/password-reset": {429: ("mail_rate_limited",)},
    "POST /api/v1/auth/reauthenticate": {403: ("wrong_password",), 429: ("login_rate_limited",)},
    "POST /api/v1/auth/change-password": {403: ("wrong_password",), 429: ("login_rate_limited",)},
    "POST /api/v1/auth/password-reset/confirm": {410: TOKEN},
    "POST /api/v1/auth/accept-invitation": {
        401: ("sign_in_to_accept",),
        403: ("invitation_email_mismatch", "tenant_suspended"),
        404: ("tenant_not_found",),
        409: ("already_member",),
        410: TOKEN,
    },
    "GET /api/v1/tenant": {403: WORKSPACE},
    "PATCH /api/v1/tenant": {403: ROLE},
    "GET /api/v1/entities": {403: WORKSPACE},
    "POST /api/v1/entities": {403: ROLE, 409: ("entity_name_taken",)},
    "GET /api/v1/entities/{entity_id}": {403: WORKSPACE, 404: ("entity_not_found",)},
    "GET /api/v1/members": {403: WORKSPACE},
    "PATCH /api/v1/members/{user_id}": {
        403: (*ROLE, "owner_required"),
        404: ("member_not_found",),
        409: ("last_owner",),
    },
    "DELETE /api/v1/members/{user_id}": {
        403: (*ROLE, "owner_required"),
        404: ("member_not_found",),
        409: ("last_owner",),
    },
    "GET /api/v1/invitations": {403: ROLE},
    "POST /api/v1/invitations": {403: (*ROLE, "owner_required"), 409: ("already_member",)},
    "DELETE /api/v1/invitations/{invitation_id}": {403: ROLE, 404: ("invitation_not_found",)},
    # audit
    "GET /api/v1/audit": {403: ROLE},
    "GET /api/v1/audit/verify": {403: ROLE},
    # automations
    "GET /api/v1/automations": {403: ROLE},
    "POST /api/v1/automations": {
        403: ROLE,
        404: ("collection_not_found", "procedure_not_found"),
        409: ("procedure_archived", "procedure_not_published"),
    },
    "GET /api/v1/automations/{automation_id}": {403: ROLE, 404: ("automation_not_found",)},
    "PATCH /api/v1/automations/{automation_id}": {
        403: ROLE,
        404: ("automation_not_found", "collection_not_found", "procedure_not_found"),
        409: ("procedure_archived", "procedure_not_published"),
    },
    "POST /api/v1/automations/{automation_id}/enable": {403: ROLE, 404: ("automation_not_found",)},
    "POST /api/v1/automations/{automation_id}/disable": {403: ROLE, 404: ("automation_not_found",)},
    "DELETE /api/v1/automations/{automation_id}": {403: ROLE, 404: ("automation_not_found",)},
    "GET /api/v1/automations/{automation_id}/executions": {403: ROLE, 404: ("automation_not_found",)},
    "GET /api/v1/automations/executions/{execution_id}": {403: ROLE, 404: ("execution_not_found",)},
    "POST /api/v1/automations/executions/{execution_id}/retry": {
        403: ROLE,
        404: ("automation_not_found", "execution_not_found"),
        409: ("condition_error", "conditions_not_met", "execution_not_retryable"),
    },
    "POST /api/v1/automations/{automation_id}/webhook/rotate": {
        403: ROLE,
        404: ("automation_not_found",),
        409: ("not_a_webhook_automation",),
    },
    "GET /api/v1/automations/{automation_id}/webhook/deliveries": {403: ROLE, 404: ("automation_not_found",)},
    "POST /hooks/{token}": {
        400: ("invalid_json",),
        401: ("bad_signature",),
        404: ("automation_not_found", "webhook_not_found"),
        409: ("automation_disabled", "conditions_not_met", "not_a_webhook_automation"),
        413: ("payload_too_large",),
        415: ("unsupported_media_type",),
    },
    # files
    "POST /api/v1/files": {403: ROLE},
    "GET /api/v1/files/{file_id}": {403: ROLE, 404: ("file_not_found",)},
    "GET /api/v1/files/{file_id}/content": {403: ROLE, 404: ("file_not_found",)},
    # template gallery
    "GET /api/v1/gallery/packs": {403: WORKSPACE},
    "GET /api/v1/gallery/packs/{pack_id}": {403: WORKSPACE, 404: ("template_pack_not_found",)},
    "GET /api/v1/templates": {403: WORKSPACE},
    "GET /api/v1/templates/{pack_id}": {403: WORKSPACE, 404: ("template_not_installed",)},
    "POST /api/v1/templates/{pack_id}/install": {
        403: ROLE,
        404: ("template_pack_not_found", "template_version_unavailable", "collection_not_found"),
        409: ("template_installed", "template_name_conflicts"),
        422: ("template_roles_invalid",),
    },
    "POST /api/v1/templates/{pack_id}/upgrade": {
        403: ROLE,
        404: ("template_not_installed", "template_pack_not_found"),
        409: (
            "template_up_to_date",
            "template_merge_conflicts",
            "template_name_conflicts",
            "collection_has_records",
            "draft_exists",
            "duplicate_values",
            "procedure_archived",
            "version_immutable",
        ),
        422: ("template_item_refused", "template_roles_invalid", "procedure_invalid"),
    },
    "POST /api/v1/templates/{pack_id}/uninstall": {
        403: ROLE,
        404: ("template_not_installed",),
        409: ("collection_has_records",),
        422: ("confirmation_required",),
    },
    # marketplace
    "GET /api/v1/marketplace/plugins": {403: WORKSPACE},
    "GET /api/v1/marketplace/plugins/{name}": {403: WORKSPACE, 404: ("plugin_not_found",)},
    "GET /api/v1/plugins": {403: ROLE},
    "GET /api/v1/plugins/{name}": {403: ROLE, 404: ("plugin_not_installed",)},
    "POST /api/v1/plugins/{name}/install": {
        403: ROLE,
        404: ("plugin_not_found", "collection_not_found"),
        409: ("plugin_already_installed", "plugin_version_unavailable"),
        422: ("invalid_installation",),
    },
    "PUT /api/v1/plugins/{name}/config": {
        403: ROLE,
        404: ("plugin_not_installed", "plugin_version_not_found"),
        422: ("invalid_settings",),
    },
    "POST /api/v1/plugins/{name}/pin": {403: ROLE, 404: ("plugin_not_installed",)},
    "POST /api/v1/plugins/{name}/enable": {403: ROLE, 404: ("plugin_not_installed",)},
    "POST /api/v1/plugins/{name}/disable": {403: ROLE, 404: ("plugin_not_installed",)},
    "POST /api/v1/plugins/{name}/health-check": {403: ROLE, 404: ("plugin_not_installed",)},
    "POST /api/v1/plugins/{name}/upgrade": {
        403: ROLE,
        404: ("plugin_not_found", "plugin_not_installed", "plugin_version_not_found"),
        409: ("not_an_upgrade", "plugin_pinned", "plugin_version_unavailable"),
        422: ("upgrade_incompatible",),
    },
    "POST /api/v1/plugins/{name}/rollback": {
        403: ROLE,
        404: ("plugin_not_installed", "plugin_version_not_found"),
        409: ("nothing_to_roll_back", "plugin_version_unavailable"),
        422: ("rollback_incompatible",),
    },
    "GET /api/v1/plugins/{name}/uninstall": {403: ROLE, 404: ("plugin_not_installed",)},
    "DELETE /api/v1/plugins/{name}": {403: ROLE, 404: ("plugin_not_installed",), 422: ("confirmation_required",)},
    "GET /api/v1/publisher/plugins": {403: PUBLISHER},
    "POST /api/v1/publisher/plugins/remote": {
        403: PUBLISHER,
        409: ("plugin_name_taken", "version_exists"),
        422: ("invalid_manifest",),
    },
    "POST /api/v1/publisher/plugins/source": {
        403: PUBLISHER,
        409: ("plugin_name_taken", "version_exists"),
        422: ("invalid_source",),
    },
    # The platform admin's routes answer 404 `not_found` to anyone else, so that they stay unseen; an
    # admin needs a verified address, and a recent password for what changes or deploys a plugin.
    "POST /api/v1/admin/publishers": {
        403: ADMIN_RECENT,
        404: ("not_found", "tenant_not_found"),
        409: ("publisher_name_taken",),
    },
    "GET /api/v1/admin/plugin-versions": {403: ADMIN, 404: ("not_found",)},
    "POST /api/v1/admin/plugin-versions/{plugin}/{version}/approve": {
        403: ADMIN_RECENT,
        404: ("plugin_version_not_found",),
        409: ("not_pending",),
    },
    "POST /api/v1/admin/plugin-versions/{plugin}/{version}/reject": {
        403: ADMIN_RECENT,
        404: ("plugin_version_not_found",),
        409: ("not_pending",),
    },
    "GET /api/v1/admin/plugin-versions/{plugin}/{version}/source": {
        403: ADMIN_RECENT,
        404: ("plugin_version_not_found", "file_not_found"),
    },
    # notifications
    "GET /api/v1/notifications": {403: WORKSPACE},
    "POST /api/v1/notifications/{notification_id}/read": {403: WORKSPACE, 404: ("notification_not_found",)},
    "GET /api/v1/notifications/unread-count": {403: WORKSPACE},
    "POST /api/v1/notifications/read-all": {403: WORKSPACE},
    "GET /api/v1/notifications/preferences": {403: WORKSPACE},
    "PUT /api/v1/notifications/preferences": {403: WORKSPACE},
    # records
    "GET /api/v1/collections": {403: ROLE},
    "POST /api/v1/collections": {403: ROLE, 409: ("collection_key_taken",)},
    "GET /api/v1/collections/{collection_id}": {403: ROLE, 404: ("collection_not_found",)},
    "PATCH /api/v1/collections/{collection_id}": {
        403: ROLE,
        404: ("collection_not_found",),
        409: ("duplicate_values",),
    },
    "GET /api/v1/collections/{collection_id}/versions": {403: ROLE, 404: ("collection_not_found",)},
    "POST /api/v1/collections/{collection_id}/purge": {403: ROLE, 404: ("collection_not_found",)},
    "POST /api/v1/collections/{collection_id}/rename": {
        403: ROLE,
        404: ("collection_not_found",),
        409: ("collection_key_taken",),
    },
    "GET /api/v1/collections/{collection_id}/records": {403: ROLE, 404: ("collection_not_found",)},
    "POST /api/v1/collections/{collection_id}/records": {
        403: ROLE,
        404: ("collection_not_found", "entity_not_found"),
        409: ("duplicate_value",),
    },
    "GET /api/v1/collections/{collection_id}/records/{record_id}": {
        403: ROLE,
        404: ("collection_not_found", "record_not_found"),
    },
    "PATCH /api/v1/collections/{collection_id}/records/{record_id}": {
        403: ROLE,
        404: ("collection_not_found", "record_not_found", "entity_not_found"),
        409: ("duplicate_value", "version_conflict"),
    },
    "DELETE /api/v1/collections/{collection_id}/records/{record_id}": {
        403: ROLE,
        404: ("collection_not_found", "record_not_found"),
    },
    "GET /api/v1/collections/{collection_id}/export": {403: ROLE, 404: ("collection_not_found",)},
    "POST /api/v1/collections/{collection_id}/import": {
        403: ROLE,
        404: ("collection_not_found",),
        409: ("duplicate_value",),
    },
    # business calendar
    "GET /api/v1/calendar": {403: ROLE},
    "PUT /api/v1/calendar": {403: ROLE, 409: ("calendar_conflict",)},
    # procedures
    "GET /api/v1/procedures": {403: WORKSPACE},
    "POST /api/v1/procedures": {403: ROLE, 404: ("collection_not_found",), 409: ("procedure_key_taken",)},
    "GET /api/v1/procedures/{procedure_id}": {403: WORKSPACE, 404: ("procedure_not_found",)},
    "PATCH /api/v1/procedures/{procedure_id}": {
        403: ROLE,
        404: ("procedure_not_found", "collection_not_found"),
        409: ("procedure_archived",),
    },
    "POST /api/v1/procedures/{procedure_id}/archive": {403: ROLE, 404: ("procedure_not_found",)},
    "GET /api/v1/procedures/{procedure_id}/versions": {403: WORKSPACE, 404: ("procedure_not_found",)},
    "POST /api/v1/procedures/{procedure_id}/versions": {
        403: ROLE,
        404: ("procedure_not_found",),
        409: ("draft_exists", "procedure_archived"),
    },
    "GET /api/v1/procedures/{procedure_id}/versions/{version_id}": {403: WORKSPACE, 404: ("version_not_found",)},
    "PUT /api/v1/procedures/{procedure_id}/versions/{version_id}": {
        403: ROLE,
        404: ("procedure_not_found", "version_not_found"),
        409: ("procedure_archived", "version_immutable"),
    },
    "GET /api/v1/procedures/{procedure_id}/versions/{version_id}/problems": {
        403: WORKSPACE,
        404: ("procedure_not_found", "version_not_found"),
    },
    "POST /api/v1/procedures/{procedure_id}/versions/{version_id}/publish": {
        403: ROLE,
        404: ("procedure_not_found", "version_not_found"),
        409: ("procedure_archived", "version_immutable"),
        422: ("procedure_invalid",),
    },
    "GET /api/v1/procedures/{procedure_id}/versions/{version_id}/diff": {403: WORKSPACE, 404: ("version_not_found",)},
    "POST /api/v1/procedures/{procedure_id}/versions/{version_id}/acknowledge": {
        403: WORKSPACE,
        404: ("version_not_found",),
        409: ("version_not_published",),
    },
    "GET /api/v1/procedures/{procedure_id}/versions/{version_id}/acknowledgements": {
        403: ROLE,
        404: ("version_not_found",),
    },
    # runs
    "POST /api/v1/runs": {
        403: WORKSPACE,
        404: ("procedure_not_found", "record_not_found", "collection_not_found"),
        409: ("procedure_archived", "procedure_not_published"),
        422: ADVANCE_422,
    },
    "GET /api/v1/runs": {403: WORKSPACE},
    "POST /api/v1/runs/migrate": {403: ROLE, 404: ("version_not_found",), 409: ("step_conflict",)},
    "GET /api/v1/runs/{run_id}": {403: WORKSPACE, 404: ("run_not_found",)},
    "POST /api/v1/runs/{run_id}/steps/{step_id}/continue": {
        403: STEP_403,
        404: STEP_404,
        409: STEP_409,
        422: ADVANCE_422,
    },
    "POST /api/v1/runs/{run_id}/steps/{step_id}/claim": {
        403: STEP_403,
        404: STEP_404,
        409: (*STEP_409, "step_already_assigned"),
        422: ADVANCE_422,
    },
    "POST /api/v1/runs/{run_id}/steps/{step_id}/assign": {
        403: (*STEP_403, "role_required"),
        404: STEP_404,
        409: STEP_409,
        422: ADVANCE_422,
    },
    "POST /api/v1/runs/{run_id}/steps/{step_id}/start": {
        403: STEP_403,
        404: STEP_404,
        409: (*STEP_409, "step_not_ready"),
        422: ADVANCE_422,
    },
    "POST /api/v1/runs/{run_id}/steps/{step_id}/complete": {
        403: STEP_403,
        404: STEP_404,
        409: (*STEP_409, "acknowledgement_required", "duplicate_value", "version_conflict"),
        # and the code of the first unmet requirement of the step (its form, checklist, evidence)
        422: ADVANCE_422,
    },
    "POST /api/v1/runs/{run_id}/steps/{step_id}/approve": {
        403: STEP_403,
        404: STEP_404,
        409: (*STEP_409, "already_voted"),
        422: ADVANCE_422,
    },
    "POST /api/v1/runs/{run_id}/steps/{step_id}/reject": {
        403: STEP_403,
        404: STEP_404,
        409: (*STEP_409, "already_voted"),
        422: ADVANCE_422,
    },
    "POST /api/v1/runs/{run_id}/steps/{step_id}/skip": {
        403: STEP_403,
        404: STEP_404,
        409: (*STEP_409, "step_mandatory"),
        422: ADVANCE_422,
    },
    "GET /api/v1/runs/{run_id}/comments": {403: WORKSPACE, 404: ("run_not_found",)},
    "POST /api/v1/runs/{run_id}/comments": {403: WORKSPACE, 404: ("run_not_found", "step_not_found")},
    "POST /api/v1/runs/{run_id}/exceptions": {
        403: WORKSPACE,
        404: STEP_404,
        409: ("run_finished", "step_conflict"),
        422: ("unknown_exception_kind", *ADVANCE_422),
    },
    "POST /api/v1/runs/{run_id}/exceptions/{exception_id}/resolve": {
        403: ("no_tenant_selected", "not_notified"),
        404: ("run_not_found", "exception_not_found"),
        409: ("run_finished", "exception_resolved", "step_conflict"),
        422: ADVANCE_422,
    },
    "POST /api/v1/runs/{run_id}/abort": {403: ROLE, 404: ("run_not_found",), 409: ("run_finished", "step_conflict")},
    "POST /api/v1/runs/{run_id}/migrate": {
        403: ROLE,
        404: ("run_not_found", "version_not_found"),
        409: ("run_finished", "migration_refused", "step_conflict"),
    },
    "GET /api/v1/my/tasks": {403: WORKSPACE},
}

# Bodies the handler reads from the request itself (Litestar documents only ``data``).
BODIES: dict[str, Body] = {
    "POST /api/v1/files": "upload",
    "POST /api/v1/collections/{collection_id}/import": "upload",
    "POST /api/v1/publisher/plugins/source": "upload",
    "POST /hooks/{token}": "json_object",
}

_TEXT = Schema(type=OpenAPIType.STRING)
_BYTES = Schema(type=OpenAPIType.STRING, content_media_type="application/octet-stream")

# Success bodies that are not JSON, by status and media type (instead of what Litestar guessed).
SUCCESS_CONTENT: dict[str, dict[int, dict[str, Schema]]] = {
    "GET /api/v1/collections/{collection_id}/export": {
        200: {
            "text/csv": Schema(type=OpenAPIType.STRING, description="UTF-8 with a byte-order mark, a header row"),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": _BYTES,
        }
    },
    # The file as it was uploaded, with the media type it was uploaded with.
    "GET /api/v1/files/{file_id}/content": {200: {"*/*": _BYTES}},
    "GET /api/v1/admin/plugin-versions/{plugin}/{version}/source": {200: {"application/gzip": _BYTES}},
}

# Media types a success response may also have, chosen by the request's Accept header.
ALTERNATIVE_CONTENT: dict[str, dict[int, dict[str, Schema]]] = {
    "POST /api/v1/templates/{pack_id}/install": {
        201: {"application/x-ndjson": Schema(type=OpenAPIType.STRING, description="One JSON progress line per step")}
    },
}

# Success statuses besides the handler's own, with the same body.
MORE_SUCCESS: dict[str, dict[int, str]] = {
    "POST /api/v1/templates/{pack_id}/install": {200: "Already installed at this version: nothing changed."},
}
