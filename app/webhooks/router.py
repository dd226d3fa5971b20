"""HTTP routes for webhooks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.auth.requests import PrincipalDep
from app.http.deps import LimitQuery, OffsetQuery, SessionDep, SettingsDep
from app.orm import Webhook
from app.webhooks import service
from app.webhooks.schemas import (
    DeliveryList,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookPublic,
)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


def get_webhook(webhook_id: str, session: SessionDep, principal: PrincipalDep) -> Webhook:
    return service.get(session=session, webhook_id=webhook_id, principal=principal)


WebhookDep = Annotated[Webhook, Depends(get_webhook)]


@router.post("", status_code=201, response_model=WebhookCreated)
def create_webhook(
    webhook_in: WebhookCreate, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> WebhookCreated:
    """Register a URL to be sent the tenant's events, signed; the secret is shown only now."""
    webhook = service.create(
        session=session, settings=settings, webhook_in=webhook_in, principal=principal
    )
    return WebhookCreated.model_validate(webhook)


@router.get("", response_model=WebhookList)
def list_webhooks(
    session: SessionDep, principal: PrincipalDep, limit: LimitQuery = 50, offset: OffsetQuery = 0
) -> WebhookList:
    """The tenant's webhooks (and its jobs' own), newest first; never their secrets."""
    webhooks, total = service.list_webhooks(
        session=session, principal=principal, limit=limit, offset=offset
    )
    return WebhookList(items=[WebhookPublic.model_validate(w) for w in webhooks], total=total)


@router.get("/{webhook_id}", response_model=WebhookPublic)
def read_webhook(webhook: WebhookDep) -> WebhookPublic:
    """One webhook, without its secret."""
    return WebhookPublic.model_validate(webhook)


@router.delete("/{webhook_id}", status_code=204)
def delete_webhook(webhook: WebhookDep, session: SessionDep) -> None:
    """Delete a webhook and its delivery log; what it had still to send is not sent."""
    service.delete(session=session, webhook=webhook)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryList)
def list_deliveries(
    webhook: WebhookDep, session: SessionDep, limit: LimitQuery = 50, offset: OffsetQuery = 0
) -> DeliveryList:
    """The delivery log, newest first: each event's status, attempts and response codes."""
    deliveries, total = service.list_deliveries(
        session=session, webhook=webhook, limit=limit, offset=offset
    )
    return DeliveryList(items=deliveries, total=total)
