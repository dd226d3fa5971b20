"""Send after commit: train tasks collected in a transaction and sent once it has committed.

A worker must never receive an id the database does not have, and a job whose transaction rolls
back must never be sent. The routes (through the job service) and the reconciler both call
`send_after_commit`; the session's own commit sends, like Polar's JobQueueManager.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from app.core.config import Settings
from app.core.queue import send_train_task

logger = logging.getLogger(__name__)

# The session's `info` key for the tasks it sends when its transaction commits.
_PENDING = "clipft.train_tasks"


@dataclass(frozen=True)
class _TrainTask:
    broker_url: str | None
    queue: str
    job_id: str


def send_after_commit(session: Session, settings: Settings, job_id: str) -> None:
    """Send the job's train task once `session` commits; never, if it rolls back."""
    # The task belongs to the transaction under way: begin it now if nothing has, or a
    # rollback of nothing would pass and the next commit would send.
    session.connection()
    pending = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []
        event.listen(session, "after_commit", _send_pending)
        event.listen(session, "after_soft_rollback", _drop_pending)
    pending.append(_TrainTask(settings.redis_url, settings.train_queue, job_id))


def _send_pending(session: Session) -> None:
    tasks = session.info.get(_PENDING, [])
    session.info[_PENDING] = []
    for task in tasks:
        _send(task)


def _drop_pending(session: Session, previous_transaction: SessionTransaction) -> None:
    # A savepoint's rollback leaves the outer transaction, and what it will send, in place.
    if not previous_transaction.nested:
        session.info[_PENDING] = []


def _send(task: _TrainTask) -> None:
    if not task.broker_url:
        # Not a broker named "None": with none configured nothing can run the job yet.
        logger.warning(
            "no broker (CLIPFT_REDIS_URL) to send job %s to: it stays queued", task.job_id
        )
        return
    try:
        send_train_task(broker_url=task.broker_url, queue=task.queue, job_id=task.job_id)
    except Exception:
        # The job stays queued; the reconciler sends it again once the broker answers.
        logger.exception("could not send job %s to the broker", task.job_id)
