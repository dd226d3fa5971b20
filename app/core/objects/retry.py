"""Store writes and reads that outlast a short outage: a bucket that does not answer for some
seconds (a gateway restart, a network blip) delays a job rather than failing it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from app.core.objects.store import StoreUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")
FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 8.0


def with_store_retries(action: Callable[[], T], *, what: str, window_seconds: float) -> T:
    """`action()`, tried again with doubling pauses while the store is unavailable, until
    `window_seconds` have passed; then its `StoreUnavailable` is raised. Any other error (a
    missing object, a corrupt one) is raised at once: waiting does not mend it."""
    deadline = time.monotonic() + window_seconds
    delay = FIRST_DELAY_SECONDS
    while True:
        try:
            return action()
        except StoreUnavailable as error:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            pause = min(delay, left, MAX_DELAY_SECONDS)
            logger.warning(
                "%s: object store unavailable (%s); retrying in %.1fs", what, error, pause
            )
            time.sleep(pause)
            delay *= 2
