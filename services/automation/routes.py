"""HTTP routes of the automation service: parse, call the service, shape the answer."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession

from services.automation import service, webhooks
from services.automation.models import Automation, AutomationActionRun, AutomationExecution
from services.automation.schemas import (
    ActionRunOut,
    AutomationIn,
    AutomationOut,
    AutomationPatch,
    ExecutionDetailOut,
    ExecutionOut,
    WebhookAcceptedOut,
    WebhookDeliveryOut,
    WebhookSecretsOut,
)
from services.outputs import struct_from
from services.settings import Settings
from tenants.principal import Principal
from tenants.scopes import api_scopes


def automation_out(automation: Automation) -> AutomationOut:
    return struct_from(
        AutomationOut,
        automation,
        description=service.description_of(automation),
        conditions=list(automation.conditions),
        actions=list(automation.actions),
    )


def execution_out(execution: AutomationExecution) -> ExecutionOut:
    return struct_from(ExecutionOut, execution)


def action_run_out(run: AutomationActionRun) -> ActionRunOut:
    return struct_from(ActionRunOut, run)


class AutomationController(Controller):
    path = "/api/v1/automations"
    tags = ["automations"]
    opt = api_scopes("automations")

    @get("", summary="Automations of the workspace")
    async def list_automations(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> list[AutomationOut]:
        return [automation_out(a) for a in await service.list_automations(db, principal)]

    @post("", status_code=201, summary="Create an automation (manager); every problem is listed at once")
    async def create_automation(
        self, data: JSONBody[AutomationIn], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> AutomationOut:
        return automation_out(await service.create_automation(db, principal, data))

    @get("/{automation_id:uuid}", summary="One automation")
    async def get_automation(
        self,
        automation_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> AutomationOut:
        return automation_out(await service.get_automation(db, principal, automation_id))

    @patch("/{automation_id:uuid}", summary="Change an automation (manager)")
    async def update_automation(
        self,
        automation_id: FromPath[uuid.UUID],
        data: JSONBody[AutomationPatch],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> AutomationOut:
        return automation_out(await service.update_automation(db, principal, automation_id, data))

    @post("/{automation_id:uuid}/enable", status_code=HTTP_200_OK, summary="Enable an automation (manager)")
    async def enable_automation(
        self,
        automation_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> AutomationOut:
        return automation_out(await service.set_enabled(db, principal, automation_id, True))

    @post("/{automation_id:uuid}/disable", status_code=HTTP_200_OK, summary="Disable an automation (manager)")
    async def disable_automation(
        self,
        automation_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> AutomationOut:
        return automation_out(await service.set_enabled(db, principal, automation_id, False))

    @delete("/{automation_id:uuid}", status_code=HTTP_204_NO_CONTENT, summary="Delete an automation (manager)")
    async def delete_automation(
        self,
        automation_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> None:
        await service.delete_automation(db, principal, automation_id)

    @get("/{automation_id:uuid}/executions", summary="An automation's executions, newest first")
    async def list_executions(
        self,
        automation_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        status: Annotated[
            str | None, QueryParameter(max_length=16, description="only executions in this status")
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=service.MAX_PAGE)] = 50,
    ) -> list[ExecutionOut]:
        found = await service.list_executions(db, principal, automation_id, limit=limit, status=status)
        return [execution_out(e) for e in found]

    @get("/executions/{execution_id:uuid}", summary="An execution: its event and every action's attempts")
    async def get_execution(
        self,
        execution_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> ExecutionDetailOut:
        execution, runs = await service.get_execution(db, principal, execution_id)
        return ExecutionDetailOut(
            execution=execution_out(execution), event=execution.event, actions=[action_run_out(r) for r in runs]
        )

    @post(
        "/executions/{execution_id:uuid}/retry",
        status_code=HTTP_200_OK,
        summary="Retry a failed or dead execution from the action that failed (manager)",
    )
    async def retry_execution(
        self,
        execution_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> ExecutionOut:
        return execution_out(await service.retry_execution(db, principal, execution_id))


# Composed into the app by services.app.
CONTROLLERS: list[type[Controller]] = [AutomationController]


# ---------------------------------------------------------------- inbound webhooks


class AutomationWebhookController(Controller):
    path = "/api/v1/automations/{automation_id:uuid}/webhook"
    tags = ["automations"]
    opt = api_scopes("automations")

    @post("/rotate", status_code=HTTP_200_OK, summary="Make or replace the webhook URL and signing secret (shown once)")
    async def rotate(
        self,
        automation_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        settings: NamedDependency[Settings],
    ) -> WebhookSecretsOut:
        made = await webhooks.rotate(db, principal, automation_id, settings)
        return WebhookSecretsOut(url=made.url, signing_secret=made.signing_secret)

    @get("/deliveries", summary="The latest inbound calls of the webhook, accepted or refused (with why)")
    async def deliveries(
        self,
        automation_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> list[WebhookDeliveryOut]:
        rows = await webhooks.list_deliveries(db, principal, automation_id)
        return [
            WebhookDeliveryOut(
                id=r.id,
                status=r.status,
                code=r.code,
                detail=r.detail,
                size_bytes=r.size_bytes,
                received_at=r.created_at,
            )
            for r in rows
        ]


class InboundWebhookController(Controller):
    """``POST /hooks/{token}``: no session and no CSRF; the secret URL (and optionally a signature)
    is the credential."""

    path = "/hooks"
    tags = ["automations"]

    @post("/{token:str}", status_code=202, summary="Call an automation's webhook with a JSON payload")
    async def receive(
        self, token: FromPath[str], request: Request[Any, Any, Any], settings: NamedDependency[Settings]
    ) -> WebhookAcceptedOut:
        limit = settings.webhook_max_bytes
        declared = request.headers.get("content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > limit
        body = b""
        if not too_big:
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    too_big = True
                    break
        call = webhooks.InboundCall(
            token=token,
            body=body,
            too_big=too_big,
            content_type=request.headers.get("content-type", ""),
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        return WebhookAcceptedOut(execution_id=await webhooks.receive(call, settings))


CONTROLLERS += [AutomationWebhookController, InboundWebhookController]
