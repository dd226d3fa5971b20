"""The sender: claims due deliveries from the outbox, POSTs them signed, records each attempt.

`clipft webhooks` runs one; several (on any machines) may run at once: a delivery is claimed
with one conditional UPDATE (its fence: still due, or its last sender's lease run out), so of
two senders exactly one takes it, and an attempt is recorded only while its sender still holds
the lease. No database session is open while a request is under way; every request has a
timeout; each runs in a thread of its own, so a slow receiver holds one thread, never the
others or any job. A sender that stops (or dies) between claiming and recording leaves the
delivery to the next sender once its lease ends: a receiver may then see the same delivery id
twice, never none (at least once).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import ColumnElement, and_, or_, select, update

from app.core.config import Settings
from app.core.db import rows_updated, session_scope
from app.orm import Webhook, WebhookAttempt, WebhookDelivery
from app.orm.base import utcnow
from app.webhooks import addresses, signing

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# What a receiver's answer is cut to in the log (its body is never read).
MAX_ERROR_CHARS = 500
USER_AGENT = "clipft-webhooks/1"


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: float

    @property
    def accepted(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class _Claimed:
    delivery_id: str
    attempt: int
    url: str
    secret: str
    payload: bytes
    created_at: datetime


def _due(now: datetime) -> ColumnElement[bool]:
    """A delivery a sender may take now: pending and due, or held by a lease that ran out."""
    return or_(
        and_(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now),
        and_(WebhookDelivery.status == "sending", WebhookDelivery.lease_expires_at < now),
    )


class Sender:
    """One sender; `clock` and `rng` are the tests' handles on time and jitter."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # Longer than any attempt can take, so that a live sender never loses its lease.
        self.lease = timedelta(seconds=3 * settings.webhook_timeout_seconds + 30)
        self.client = httpx.Client(
            timeout=httpx.Timeout(settings.webhook_timeout_seconds),
            follow_redirects=False,  # a redirect could lead anywhere, past the address check
            trust_env=False,  # no proxy from the environment: the checked address is the one
            headers={"User-Agent": USER_AGENT},
        )
        self.pool = ThreadPoolExecutor(
            max_workers=settings.webhook_sender_threads, thread_name_prefix="webhook-send"
        )

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()

    def claim(self, limit: int) -> list[str]:
        """Take up to `limit` due deliveries for this sender; their ids."""
        now = self.clock()
        won = []
        with session_scope(self.settings.resolved_database_url) as session:
            candidates = session.scalars(
                select(WebhookDelivery.id)
                .where(_due(now))
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(limit)
            ).all()
            for delivery_id in candidates:
                taken = rows_updated(
                    session,
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id == delivery_id, _due(now))
                    .values(
                        status="sending", lease_owner=self.owner, lease_expires_at=now + self.lease
                    ),
                )
                if taken:
                    won.append(delivery_id)
        return won

    def deliver(self, delivery_id: str) -> Outcome | None:
        """One attempt at a claimed delivery, recorded; None if it is no longer this sender's."""
        claimed = self._load(delivery_id)
        if claimed is None:
            return None
        started = self.clock()
        outcome = self._post(claimed, started)
        self._record(claimed, started, outcome)
        return outcome

    def run_once(self) -> int:
        """Claim what is due (up to one delivery per thread), send it all, and wait; how many
        deliveries were attempted."""
        claimed = self.claim(self.settings.webhook_sender_threads)
        for future in [self.pool.submit(self._deliver_logged, d) for d in claimed]:
            future.result()
        return len(claimed)

    def run_forever(self, stop: threading.Event) -> None:
        """Keep every thread busy with due deliveries until `stop` is set, then finish the
        attempts under way."""
        in_flight: set[Future[None]] = set()
        while not stop.is_set():
            in_flight = {future for future in in_flight if not future.done()}
            free = self.settings.webhook_sender_threads - len(in_flight)
            try:
                claimed = self.claim(free) if free > 0 else []
            except Exception:
                logger.exception("claiming webhook deliveries failed; will try again")
                claimed = []
            in_flight.update(self.pool.submit(self._deliver_logged, d) for d in claimed)
            if free > 0 and len(claimed) < free:
                stop.wait(self.settings.webhook_poll_seconds)  # nothing more is due
            else:
                # Every thread busy, more may be due: go on as soon as one is free.
                wait(in_flight, self.settings.webhook_poll_seconds, FIRST_COMPLETED)
        for future in in_flight:
            future.result()

    def _deliver_logged(self, delivery_id: str) -> None:
        try:
            self.deliver(delivery_id)
        except Exception:
            # Left to its lease: another pass (or another sender) tries it again.
            logger.exception("webhook delivery %s: the attempt was not recorded", delivery_id)

    def _load(self, delivery_id: str) -> _Claimed | None:
        with session_scope(self.settings.resolved_database_url) as session:
            row = session.execute(
                select(WebhookDelivery, Webhook)
                .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                .where(
                    WebhookDelivery.id == delivery_id,
                    WebhookDelivery.status == "sending",
                    WebhookDelivery.lease_owner == self.owner,
                )
            ).one_or_none()
            if row is None:
                return None
            delivery, webhook = row
            return _Claimed(
                delivery_id=delivery.id,
                attempt=delivery.attempts + 1,
                url=webhook.url,
                secret=webhook.secret,
                payload=signing.body(
                    delivery_id=delivery.id,
                    type=delivery.type,
                    created=delivery.created_at,
                    data=delivery.data,
                ),
                created_at=delivery.created_at,
            )

    def _post(self, claimed: _Claimed, started: datetime) -> Outcome:
        began = time.monotonic()

        def outcome(status_code: int | None, error: str | None) -> Outcome:
            return Outcome(status_code, error, round((time.monotonic() - began) * 1000, 3))

        try:
            target = addresses.resolve(
                claimed.url,
                allow_private=self.settings.webhook_allow_private,
                timeout_seconds=self.settings.webhook_timeout_seconds,
            )
        except addresses.AddressRefused as refused:
            return outcome(None, f"not sent: {refused}")
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            signing.SIGNATURE_HEADER: signing.signature(
                secret=claimed.secret,
                timestamp=int(started.timestamp()),
                payload=claimed.payload,
            ),
            "Clipft-Delivery": claimed.delivery_id,
        }
        request = self.client.build_request(
            "POST",
            target.pinned_url,
            content=claimed.payload,
            headers=headers,
            extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
        )
        try:
            # The answer's status is all that counts: its body is never read.
            response = self.client.send(request, stream=True)
            response.close()
        except httpx.TimeoutException:
            return outcome(None, f"no answer within {self.settings.webhook_timeout_seconds:g} s")
        except httpx.HTTPError as error:
            return outcome(None, f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS])
        if 200 <= response.status_code < 300:
            return outcome(response.status_code, None)
        return outcome(response.status_code, f"answered {response.status_code}")

    def _record(self, claimed: _Claimed, started: datetime, outcome: Outcome) -> None:
        now = self.clock()
        values: dict[str, object] = {
            "attempts": WebhookDelivery.attempts + 1,
            "last_status_code": outcome.status_code,
            "last_error": outcome.error,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        if outcome.accepted:
            values.update(status="delivered", delivered_at=now)
        else:
            retry_at = now + self.backoff(claimed.attempt)
            give_up_at = claimed.created_at + timedelta(hours=self.settings.webhook_retry_hours)
            if retry_at > give_up_at:
                values["status"] = "failed"
            else:
                values.update(status="pending", next_attempt_at=retry_at)
        with session_scope(self.settings.resolved_database_url) as session:
            if session.get(WebhookDelivery, claimed.delivery_id) is None:
                return  # its webhook was deleted meanwhile
            # The attempt happened whether or not this sender still holds the delivery.
            session.add(
                WebhookAttempt(
                    delivery_id=claimed.delivery_id,
                    number=claimed.attempt,
                    started_at=started,
                    duration_ms=outcome.duration_ms,
                    status_code=outcome.status_code,
                    error=outcome.error,
                )
            )
            rows_updated(
                session,
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == claimed.delivery_id,
                    WebhookDelivery.status == "sending",
                    WebhookDelivery.lease_owner == self.owner,
                )
                .values(**values),
            )

    def backoff(self, failed_attempts: int) -> timedelta:
        """The wait after the `failed_attempts`-th failure: doubling from the first delay up to
        the longest, its second half random (so that receivers coming back are not met by
        every retry at once)."""
        first = self.settings.webhook_retry_first_delay_seconds
        longest = self.settings.webhook_retry_max_delay_seconds
        delay = min(longest, first * 2 ** min(failed_attempts - 1, 60))
        return timedelta(seconds=delay / 2 + self.rng.uniform(0, delay / 2))


def run_sender(settings: Settings, stop: threading.Event) -> None:
    """Send deliveries until `stop` is set (`clipft webhooks`)."""
    sender = Sender(settings)
    logger.info(
        "webhook sender %s: %d threads, polling every %g s",
        sender.owner,
        settings.webhook_sender_threads,
        settings.webhook_poll_seconds,
    )
    try:
        sender.run_forever(stop)
    finally:
        sender.close()
