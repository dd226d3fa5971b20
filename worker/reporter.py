"""Training callbacks that write a job's progress, metrics and checkpoints to the database.

Every write is fenced: it happens in one transaction with a conditional UPDATE of the job that
holds only while this attempt's lease (`lease_owner`, unique per attempt) is still the job's.
An attempt that lost its lease (the reconciler gave the job to another) writes nothing more,
and its `should_stop` turns true, so its training process is stopped at the next step.

Progress goes out at most about once a second, never every step; a separate thread keeps the
heartbeat fresh even while the run is loading a model or evaluating, when no steps happen.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.core.db import rows_updated, session_scope
from app.core.instruments import TRAINING_IMAGES_PER_SECOND, TRAINING_STEPS
from app.core.storage import checkpoints_dir, folder_bytes, new_id
from app.jobs.event_types import EventType
from app.jobs.events import add_event
from app.jobs.lifecycle import JobStatus
from app.jobs.loss_curve import with_point
from app.orm import Checkpoint, Job
from app.orm.base import utcnow
from worker import shutdown
from worker.checkpoint_sync import CheckpointSync
from worker.training.progress import CheckpointInfo, Notice, StepProgress, TrainingCallbacks

logger = logging.getLogger(__name__)

# A write that fails on a database error is tried this often, waiting 0.5, 1, 2, 4 s between:
# a blip or a restart heals, an outage of more than about 8 s fails the job.
DATABASE_ATTEMPTS = 5
DATABASE_RETRY_SECONDS = 0.5
T = TypeVar("T")


class JobReporter(TrainingCallbacks):
    def __init__(
        self,
        *,
        database_url: str,
        data_dir: Path,
        job_id: str,
        owner: str,
        heartbeat_seconds: float,
        progress_interval_seconds: float = 1.0,
        stall_seconds: float = float("inf"),
        checkpoint_sync: CheckpointSync | None = None,
    ) -> None:
        self.database_url = database_url
        self.data_dir = data_dir
        self.job_id = job_id
        self.owner = owner
        self.heartbeat_seconds = heartbeat_seconds
        self.progress_interval_seconds = progress_interval_seconds
        self.stall_seconds = stall_seconds
        self.checkpoint_sync = checkpoint_sync
        self._last_sign_of_life = time.monotonic()
        self.lease_lost = threading.Event()
        self._last_progress_write = 0.0
        self._pending: StepProgress | None = None
        self._steps_counted = 0
        self._stop_heartbeat = threading.Event()
        self._heartbeat_thread = threading.Thread(
            target=self._heartbeat_loop, name=f"heartbeat-{job_id}", daemon=True
        )

    def __enter__(self) -> JobReporter:
        self._heartbeat_thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop_heartbeat.set()
        self._heartbeat_thread.join(timeout=10)
        if self._pending is not None:
            self._write_progress(self._pending)
        # A job that no longer runs here has no throughput to report.
        with contextlib.suppress(KeyError):
            TRAINING_IMAGES_PER_SECOND.remove(self.job_id)

    def fenced(self, write: Callable[[Session], None] | None = None, **values: Any) -> bool:
        """Run `write` in a transaction in which this attempt still holds the job.

        The conditional UPDATE (which also sets `values` and refreshes the heartbeat) locks the
        job's row until the commit, so a takeover cannot slip in between the check and the
        writes after it. Returns False, and writes nothing, once the lease is lost. Transient
        database errors are retried with backoff; only a persistent outage raises.
        """
        if self.lease_lost.is_set():
            return False
        return self._retrying(lambda: self._fenced_once(write, values))

    def _retrying(self, action: Callable[[], T]) -> T:
        for attempt in range(DATABASE_ATTEMPTS - 1):
            try:
                return action()
            except OperationalError:
                delay = DATABASE_RETRY_SECONDS * 2**attempt
                logger.warning("job %s: database error; retrying in %.1fs", self.job_id, delay)
                time.sleep(delay)
        return action()

    def fenced_event(
        self, type: EventType, message: str, data: dict[str, Any], **values: Any
    ) -> bool:
        """`fenced`, writing one event of the job."""
        return self.fenced(
            lambda session: add_event(
                session, job_id=self.job_id, type=type, message=message, data=data
            ),
            **values,
        )

    def _fenced_once(self, write: Callable[[Session], None] | None, values: dict[str, Any]) -> bool:
        with session_scope(self.database_url) as session:
            if "metrics" in values:
                # New metrics join the job's, read in the same transaction that writes them.
                job = session.get(Job, self.job_id)
                values = {
                    **values,
                    "metrics": {**(job.metrics if job else {}), **values["metrics"]},
                }
            held = rows_updated(
                session,
                update(Job)
                .where(
                    Job.id == self.job_id,
                    Job.lease_owner == self.owner,
                    Job.status == JobStatus.RUNNING,
                )
                .values(heartbeat_at=utcnow(), **values),
            )
            if not held:
                self.lease_lost.set()
                logger.warning("job %s: this attempt lost its lease", self.job_id)
                return False
            if write is not None:
                write(session)
            return True

    def _heartbeat_loop(self) -> None:
        while not self._stop_heartbeat.wait(self.heartbeat_seconds):
            silent = time.monotonic() - self._last_sign_of_life
            if silent > self.stall_seconds:
                # The heartbeat proves progress, not a live thread: a hung run gets none, the
                # reconciler requeues the job, and this attempt, replaced, stops its process.
                logger.warning(
                    "job %s: no progress for %.0fs; heartbeat withheld", self.job_id, silent
                )
                continue
            try:
                self.fenced()
            except Exception:
                logger.exception("heartbeat for job %s failed; will retry", self.job_id)

    def on_process_started(self, pid: int) -> None:
        """Record which process trains this attempt, for whoever reads the worker's machine."""
        self._last_sign_of_life = time.monotonic()
        self.fenced_event(EventType.PROCESS, f"training process {pid} started", {"pid": pid})

    def on_step(self, progress: StepProgress) -> None:
        self._last_sign_of_life = time.monotonic()
        TRAINING_IMAGES_PER_SECOND.labels(job_id=self.job_id).set(progress.samples_per_second)
        TRAINING_STEPS.inc(max(0, progress.step - self._steps_counted))
        self._steps_counted = progress.step
        self._pending = progress
        now = time.monotonic()
        if now - self._last_progress_write >= self.progress_interval_seconds:
            self._write_progress(progress)
            self._last_progress_write = now

    def _write_progress(self, progress: StepProgress) -> None:
        self._pending = None

        def add_loss_point(session: Session) -> None:
            # Read and written under the row lock that the fenced UPDATE took.
            job = session.get(Job, self.job_id)
            if job is not None:
                job.loss_curve = with_point(job.loss_curve, progress.step, progress.train_loss)

        self.fenced(
            add_loss_point,
            progress={
                "epoch": progress.epoch,
                "epochs": progress.epochs,
                "step": progress.step,
                "total_steps": progress.total_steps,
                "fraction": round(progress.fraction, 4),
                "eta_seconds": round(progress.eta_seconds, 1),
                "samples_per_second": round(progress.samples_per_second, 2),
            },
            metrics={"train_loss": progress.train_loss},
        )

    def on_evaluation(self, epoch: int, metrics: dict[str, Any]) -> None:
        self._last_sign_of_life = time.monotonic()
        latest = {**metrics, "epoch": epoch}
        if epoch == 0:
            latest["base_model_metrics"] = metrics
        label = "base model" if epoch == 0 else f"epoch {epoch}"
        summary = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        self.fenced_event(
            EventType.EVALUATION,
            f"{label}: {summary or 'no val split'}",
            {"epoch": epoch, **metrics},
            metrics=latest,
        )

    def on_checkpoint(self, checkpoint: CheckpointInfo) -> None:
        self._last_sign_of_life = time.monotonic()

        def record(session: Session) -> None:
            session.add(
                Checkpoint(
                    id=new_id(),
                    job_id=self.job_id,
                    epoch=checkpoint.epoch,
                    step=checkpoint.step,
                    path=str(checkpoint.path.relative_to(self.data_dir)),
                    metric_name=checkpoint.metric_name,
                    metric_value=checkpoint.metric_value,
                )
            )
            add_event(
                session,
                job_id=self.job_id,
                type=EventType.CHECKPOINT,
                message=f"checkpoint for epoch {checkpoint.epoch} written",
                data={"epoch": checkpoint.epoch, "step": checkpoint.step},
            )

        sync = self.checkpoint_sync
        # Objects first, the row last: a row names a whole folder in the store. An attempt that
        # lost its lease uploads nothing (and withdraws what it uploaded as the lease went).
        if sync is not None and not self.fenced():
            return
        published = sync is not None and sync.publish(checkpoint.path)
        # Pruned before it is reported: the job's folder now holds what this job keeps.
        recorded = self.fenced(
            record, checkpoint_bytes=folder_bytes(checkpoints_dir(self.data_dir, self.job_id))
        )
        if sync is not None:
            if published and not recorded:
                sync.withdraw(checkpoint.path)
            sync.drop_pruned(checkpoint.path.parent)

    def on_notice(self, notice: Notice) -> None:
        self._last_sign_of_life = time.monotonic()
        self.fenced_event(notice.type, notice.message, notice.data)

    def should_stop(self) -> bool:
        """Stop on a cancel, when the worker shuts down, or when this attempt no longer holds
        the job (it was requeued)."""
        if self.lease_lost.is_set() or shutdown.requested():
            return True
        try:
            with session_scope(self.database_url) as session:
                row = session.execute(
                    select(Job.cancel_requested, Job.status, Job.lease_owner).where(
                        Job.id == self.job_id
                    )
                ).one_or_none()
        except OperationalError:
            # A database blip is no reason to stop training; the next check asks again.
            logger.warning("job %s: could not ask about a cancel; will ask again", self.job_id)
            return False
        if row is None:
            return True
        cancel_requested, status, lease_owner = row
        if status != JobStatus.RUNNING or lease_owner != self.owner:
            self.lease_lost.set()
            return True
        return bool(cancel_requested)
