"""Training callbacks that write a job's progress, metrics and checkpoints to the database.

Every write is fenced: it happens in one transaction with a conditional UPDATE of the job that
holds only while this attempt's lease (`lease_owner`, unique per attempt) is still the job's.
An attempt that lost its lease (the reconciler gave the job to another) writes nothing more,
and its `should_stop` turns true, so its training process is stopped at the next step.

Progress goes out at most about once a second, never every step; a separate thread keeps the
heartbeat fresh even while the run is loading a model or evaluating, when no steps happen.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.db import rows_updated, session_scope
from app.core.storage import new_id
from app.jobs.events import add_event
from app.orm import Checkpoint, Job
from app.orm.base import utcnow
from worker.training.progress import CheckpointInfo, Notice, StepProgress, TrainingCallbacks

logger = logging.getLogger(__name__)


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
    ) -> None:
        self.database_url = database_url
        self.data_dir = data_dir
        self.job_id = job_id
        self.owner = owner
        self.heartbeat_seconds = heartbeat_seconds
        self.progress_interval_seconds = progress_interval_seconds
        self.lease_lost = threading.Event()
        self._last_progress_write = 0.0
        self._pending: StepProgress | None = None
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

    @contextmanager
    def fenced(self, **values: Any) -> Iterator[Session | None]:
        """A session in which this attempt still holds the job, or None if it lost it.

        The conditional UPDATE (which also refreshes the heartbeat) locks the job's row until
        the commit, so a takeover cannot slip in between the check and the writes after it.
        """
        if self.lease_lost.is_set():
            yield None
            return
        with session_scope(self.database_url) as session:
            held = rows_updated(
                session,
                update(Job)
                .where(
                    Job.id == self.job_id, Job.lease_owner == self.owner, Job.status == "running"
                )
                .values(heartbeat_at=utcnow(), **values),
            )
            if not held:
                self.lease_lost.set()
                logger.warning(
                    "job %s: this attempt lost its lease; it writes no more", self.job_id
                )
                yield None
                return
            yield session

    def _heartbeat_loop(self) -> None:
        while not self._stop_heartbeat.wait(self.heartbeat_seconds):
            try:
                with self.fenced():
                    pass
            except Exception:
                logger.exception("heartbeat for job %s failed; will retry", self.job_id)

    def on_process_started(self, pid: int) -> None:
        """Record which process trains this attempt, for whoever reads the worker's machine."""
        with self.fenced() as session:
            if session is not None:
                add_event(
                    session,
                    job_id=self.job_id,
                    type="process",
                    message=f"training process {pid} started",
                    data={"pid": pid},
                )

    def on_step(self, progress: StepProgress) -> None:
        self._pending = progress
        now = time.monotonic()
        if now - self._last_progress_write >= self.progress_interval_seconds:
            self._write_progress(progress)
            self._last_progress_write = now

    def _write_progress(self, progress: StepProgress) -> None:
        self._pending = None
        with session_scope(self.database_url) as session:
            job = session.get(Job, self.job_id)
            metrics = {**(job.metrics if job else {}), "train_loss": progress.train_loss}
        with self.fenced(
            progress={
                "epoch": progress.epoch,
                "epochs": progress.epochs,
                "step": progress.step,
                "total_steps": progress.total_steps,
                "fraction": round(progress.fraction, 4),
                "eta_seconds": round(progress.eta_seconds, 1),
                "samples_per_second": round(progress.samples_per_second, 2),
            },
            metrics=metrics,
        ):
            pass

    def on_evaluation(self, epoch: int, metrics: dict[str, Any]) -> None:
        with session_scope(self.database_url) as session:
            job = session.get(Job, self.job_id)
            latest = {**(job.metrics if job else {}), **metrics, "epoch": epoch}
        if epoch == 0:
            latest["base_model_metrics"] = metrics
        with self.fenced(metrics=latest) as session:
            if session is None:
                return
            label = "base model" if epoch == 0 else f"epoch {epoch}"
            summary = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
            add_event(
                session,
                job_id=self.job_id,
                type="evaluation",
                message=f"{label}: {summary or 'no val split'}",
                data={"epoch": epoch, **metrics},
            )

    def on_checkpoint(self, checkpoint: CheckpointInfo) -> None:
        with self.fenced() as session:
            if session is None:
                return
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
                type="checkpoint",
                message=f"checkpoint for epoch {checkpoint.epoch} written",
                data={"epoch": checkpoint.epoch, "step": checkpoint.step},
            )

    def on_notice(self, notice: Notice) -> None:
        with self.fenced() as session:
            if session is not None:
                add_event(
                    session,
                    job_id=self.job_id,
                    type=notice.type,
                    message=notice.message,
                    data=notice.data,
                )

    def should_stop(self) -> bool:
        """Stop on a cancel, or when this attempt no longer holds the job (it was requeued)."""
        if self.lease_lost.is_set():
            return True
        with session_scope(self.database_url) as session:
            row = session.execute(
                select(Job.cancel_requested, Job.status, Job.lease_owner).where(
                    Job.id == self.job_id
                )
            ).one_or_none()
        if row is None:
            return True
        cancel_requested, status, lease_owner = row
        if status != "running" or lease_owner != self.owner:
            self.lease_lost.set()
            return True
        return bool(cancel_requested)
