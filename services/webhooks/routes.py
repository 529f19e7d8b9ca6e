"""HTTP routes of the webhooks service: parse, call the service, shape the answer."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from msgspec import UNSET
from sqlalchemy.ext.asyncio import AsyncSession

from services.outputs import struct_from
from services.schema_docs import Cursor
from services.webhooks import service
from services.webhooks.models import WebhookDelivery, WebhookSubscription
from services.webhooks.schemas import (
    AttemptOut,
    DeliveryDetailOut,
    DeliveryOut,
    DeliveryPage,
    EventTypeOut,
    RotateIn,
    SubscriptionIn,
    SubscriptionOut,
    SubscriptionPatch,
    SubscriptionWithSecret,
)
from tenants.principal import Principal
from tenants.scopes import only_scope


def subscription_out(subscription: WebhookSubscription) -> SubscriptionOut:
    return struct_from(SubscriptionOut, subscription, event_types=list(subscription.event_types))


def with_secret(subscription: WebhookSubscription, secret: str) -> SubscriptionWithSecret:
    return struct_from(SubscriptionWithSecret, subscription, event_types=list(subscription.event_types), secret=secret)


def delivery_out(delivery: WebhookDelivery) -> DeliveryOut:
    return struct_from(DeliveryOut, delivery)


def _change(data: SubscriptionPatch) -> service.SubscriptionChange:
    return service.SubscriptionChange(
        url=None if data.url is UNSET else data.url,
        event_types=None if data.event_types is UNSET else data.event_types,
        description=None if data.description is UNSET else data.description,
        enabled=None if data.enabled is UNSET else data.enabled,
    )


SubscriptionId = FromPath[uuid.UUID]


class WebhooksController(Controller):
    path = "/api/v1/webhooks"
    tags = ["webhooks"]
    opt = only_scope(service.MANAGE_SCOPE)

    @get("/event-types", summary="The event types the caller may subscribe to, with the scope each needs")
    async def event_types(self, principal: NamedDependency[Principal]) -> list[EventTypeOut]:
        service.require_manager(principal)
        return [struct_from(EventTypeOut, choice) for choice in service.event_choices(principal)]

    @post("", status_code=201, summary="Subscribe a URL to events (admin); the answer shows the secret once")
    async def create_subscription(
        self, data: JSONBody[SubscriptionIn], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> SubscriptionWithSecret:
        new = service.NewSubscription(
            url=data.url, event_types=data.event_types, description=data.description, enabled=data.enabled
        )
        return with_secret(*await service.create_subscription(db, principal, new))

    @get("", summary="The workspace's webhook subscriptions (a token: those of its own app)")
    async def list_subscriptions(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> list[SubscriptionOut]:
        return [subscription_out(s) for s in await service.list_subscriptions(db, principal)]

    @get("/{subscription_id:uuid}", summary="One webhook subscription")
    async def get_subscription(
        self, subscription_id: SubscriptionId, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> SubscriptionOut:
        return subscription_out(await service.get_subscription(db, principal, subscription_id))

    @patch("/{subscription_id:uuid}", summary="Change a subscription, or turn it on or off")
    async def update_subscription(
        self,
        subscription_id: SubscriptionId,
        data: JSONBody[SubscriptionPatch],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> SubscriptionOut:
        return subscription_out(await service.update_subscription(db, principal, subscription_id, _change(data)))

    @delete("/{subscription_id:uuid}", status_code=HTTP_204_NO_CONTENT, summary="Delete a subscription and its log")
    async def delete_subscription(
        self, subscription_id: SubscriptionId, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> None:
        await service.delete_subscription(db, principal, subscription_id)

    @post(
        "/{subscription_id:uuid}/rotate-secret",
        status_code=HTTP_200_OK,
        summary="A new secret (shown once); the current one still signs during the overlap",
    )
    async def rotate_secret(
        self,
        subscription_id: SubscriptionId,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        data: JSONBody[RotateIn | None] = None,
    ) -> SubscriptionWithSecret:
        hours = data.overlap_hours if data is not None else None
        return with_secret(*await service.rotate_secret(db, principal, subscription_id, hours))

    @get("/{subscription_id:uuid}/deliveries", summary="A subscription's deliveries, newest first (keyset pagination)")
    async def list_deliveries(
        self,
        subscription_id: SubscriptionId,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        cursor: Cursor = None,
        limit: Annotated[int, QueryParameter(ge=1, le=service.MAX_PAGE)] = 50,
    ) -> DeliveryPage:
        rows, next_cursor = await service.list_deliveries(db, principal, subscription_id, cursor=cursor, limit=limit)
        return DeliveryPage(items=[delivery_out(d) for d in rows], next_cursor=next_cursor)

    @get(
        "/{subscription_id:uuid}/deliveries/{delivery_id:uuid}",
        summary="One delivery, with the body it sends and every attempt",
    )
    async def get_delivery(
        self,
        subscription_id: SubscriptionId,
        delivery_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> DeliveryDetailOut:
        delivery, attempts = await service.get_delivery(db, principal, subscription_id, delivery_id)
        history = [struct_from(AttemptOut, attempt) for attempt in attempts]
        return struct_from(DeliveryDetailOut, delivery, event=dict(delivery.event), history=history)

    @post(
        "/{subscription_id:uuid}/deliveries/{delivery_id:uuid}/redeliver",
        status_code=HTTP_202_ACCEPTED,
        summary="Send a delivery again now, with the same webhook-id",
    )
    async def redeliver(
        self,
        subscription_id: SubscriptionId,
        delivery_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> DeliveryOut:
        return delivery_out(await service.redeliver(db, principal, subscription_id, delivery_id))


# Composed into the app by services.app.
CONTROLLERS: list[type[Controller]] = [WebhooksController]
