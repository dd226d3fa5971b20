"""The outbox: an event becomes one delivery row per webhook that hears it, written in the
transaction of the change that caused it, so that it is sent if and only if that commits.

`clipft webhooks` (app/webhooks/sender.py) sends the rows; nothing here touches the network.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from app.core.storage import new_id
from app.orm import Webhook, WebhookDelivery
from app.orm.base import utcnow
from app.webhooks.event_types import WebhookEvent


def record_event(
    session: Session,
    *,
    tenant: str,
    type: WebhookEvent,
    subject_id: str,
    data: dict[str, Any],
    job_id: str | None = None,
) -> int:
    """Queue the event for the tenant's webhooks that hear `type` (and for the job's own
    webhook, given `job_id`); how many deliveries that made."""
    scope: ColumnElement[bool] = Webhook.job_id.is_(None)
    if job_id is not None:
        scope = or_(scope, Webhook.job_id == job_id)
    hearing = [
        webhook
        for webhook in session.scalars(select(Webhook).where(Webhook.tenant == tenant, scope))
        if type in webhook.events
    ]
    now = utcnow()
    for webhook in hearing:
        session.add(
            WebhookDelivery(
                id=new_id(),
                webhook_id=webhook.id,
                type=type,
                subject_id=subject_id,
                data=data,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
    return len(hearing)
