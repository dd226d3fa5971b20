"""Webhooks: register (the URL checked, the secret made), read, list, delete, and their
delivery logs. Routes commit."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import Conflict, Unprocessable
from app.core.principal import Principal
from app.core.queries import get_or_404, newest_first_page
from app.core.storage import new_id
from app.orm import Webhook, WebhookAttempt, WebhookDelivery
from app.webhooks.addresses import AddressRefused, resolve
from app.webhooks.event_types import JOB_EVENTS, WebhookEvent
from app.webhooks.schemas import AttemptPublic, DeliveryPublic, WebhookCreate
from app.webhooks.signing import new_secret

# A name lookup at registration waits at most this long.
RESOLVE_SECONDS = 5.0


def check_url(*, settings: Settings, url: str, field: str = "url") -> None:
    """422 unless deliveries may go to `url` (http(s), a public address or an allowed one)."""
    try:
        resolve(url, allow_private=settings.webhook_allow_private, timeout_seconds=RESOLVE_SECONDS)
    except AddressRefused as refused:
        raise Unprocessable(f"{field}: {refused}") from None


def create(
    *, session: Session, settings: Settings, webhook_in: WebhookCreate, principal: Principal
) -> Webhook:
    """Register a webhook of the caller's tenant; its secret is in the returned row."""
    check_url(settings=settings, url=webhook_in.url)
    registered = session.scalar(
        select(func.count())
        .select_from(Webhook)
        .where(Webhook.tenant == principal.tenant, Webhook.job_id.is_(None))
    )
    if (registered or 0) >= settings.webhook_max_per_tenant:
        raise Conflict(
            f"tenant {principal.tenant} already has {registered} webhooks, the most it may "
            "have: delete one first"
        )
    return _add(
        session,
        tenant=principal.tenant,
        url=webhook_in.url,
        events=webhook_in.events,
        description=webhook_in.description,
        job_id=None,
    )


def create_for_job(
    *,
    session: Session,
    tenant: str,
    job_id: str,
    url: str,
    events: Iterable[WebhookEvent] | None,
) -> Webhook:
    """The webhook given on `POST /jobs`: it hears that job's end only (the URL checked by the
    caller, before the job was made)."""
    return _add(
        session,
        tenant=tenant,
        url=url,
        events=list(events or JOB_EVENTS),
        description=f"job {job_id}",
        job_id=job_id,
    )


def _add(
    session: Session,
    *,
    tenant: str,
    url: str,
    events: list[WebhookEvent],
    description: str,
    job_id: str | None,
) -> Webhook:
    webhook = Webhook(
        id=new_id(),
        tenant=tenant,
        url=url,
        events=[str(event) for event in events],
        secret=new_secret(),
        description=description,
        job_id=job_id,
    )
    session.add(webhook)
    session.flush()
    return webhook


def get(*, session: Session, webhook_id: str, principal: Principal) -> Webhook:
    """The webhook, or a 404 (another tenant's too)."""
    return get_or_404(session, Webhook, webhook_id, "webhook", principal=principal)


def list_webhooks(
    *, session: Session, principal: Principal, limit: int, offset: int
) -> tuple[list[Webhook], int]:
    """Newest first, the tenant's own and its jobs' webhooks."""
    return newest_first_page(
        session, select(Webhook), Webhook, principal=principal, limit=limit, offset=offset
    )


def delete(*, session: Session, webhook: Webhook) -> None:
    """Remove the webhook with its deliveries: those still pending are never sent."""
    session.delete(webhook)
    session.flush()


def list_deliveries(
    *, session: Session, webhook: Webhook, limit: int, offset: int
) -> tuple[list[DeliveryPublic], int]:
    """The webhook's deliveries, newest first, each with its attempts."""
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook.id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    deliveries = list(
        session.scalars(
            query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
            .limit(limit)
            .offset(offset)
        )
    )
    attempts: dict[str, list[AttemptPublic]] = defaultdict(list)
    if deliveries:
        for attempt in session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_([delivery.id for delivery in deliveries]))
            .order_by(WebhookAttempt.id)
        ):
            attempts[attempt.delivery_id].append(AttemptPublic.model_validate(attempt))
    return [
        DeliveryPublic.model_validate(
            {
                **{name: getattr(delivery, name) for name in DELIVERY_COLUMNS},
                "attempt_log": attempts[delivery.id],
            }
        )
        for delivery in deliveries
    ], total


DELIVERY_COLUMNS = tuple(name for name in DeliveryPublic.model_fields if name != "attempt_log")
