"""A warm shutdown of the worker (`docker stop`, `compose restart`, systemd): SIGTERM.

Celery's own warm shutdown waits for the running task, which for a training job is hours, so
the container is SIGKILLed at the end of its grace period and the job waits for the heartbeat
timeout. Instead the main process passes the request to its pool processes; the running job
stops its training run at the next step and goes back to the queue, and the worker exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import billiard.process

logger = logging.getLogger(__name__)

_requested = threading.Event()


def requested() -> bool:
    """Whether this process was asked to shut down (a job running here should give way)."""
    return _requested.is_set()


def request() -> None:
    _requested.set()


@contextlib.contextmanager
def sigterm_gives_way() -> Iterator[None]:
    """While a job runs in a pool process, SIGTERM asks it to give way instead of killing the
    process; Celery's own handler is back afterwards (it ends an idle pool process)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # the threads pool: the main process's shutdown sets the request itself
        return
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: request())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def on_worker_shutting_down(**_: Any) -> None:
    """In the main process: pass the shutdown to the pool processes (and to a job running here,
    with the solo or threads pool)."""
    request()
    for child in billiard.process.active_children():
        if child.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
    logger.info("shutting down: a running job is put back in the queue at its next step")
