"""`clipft serve` watches its children: a worker or embedded Redis that dies is started again
after a delay that doubles each time; one that keeps dying makes serve give up and exit 1, so a
supervisor such as systemd sees the failure instead of a stack that looks alive."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5
MAX_DELAY_SECONDS = 30.0


class Child(Protocol):
    name: str

    def exited(self) -> bool:
        """Whether it ended (reaping it, so no zombie stays behind)."""
        ...

    def start(self) -> object: ...


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_seconds: float = 1.0
    limit: int = 5
    window_seconds: float = 300.0

    def delay(self, recent_restarts: int) -> float:
        return min(self.first_delay_seconds * 2**recent_restarts, MAX_DELAY_SECONDS)


@dataclass
class _Record:
    child: Child
    restarts: list[float] = field(default_factory=list)


class ChildWatcher:
    """A thread that restarts dead children; children it starts get their parent-death
    signal from it, so it lives as long as the stack."""

    def __init__(
        self, children: list[Child], policy: RestartPolicy, on_give_up: Callable[[str], None]
    ) -> None:
        self._records = [_Record(child) for child in children]
        self.policy = policy
        self.on_give_up = on_give_up
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="child-watcher", daemon=True)

    def start(self) -> ChildWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=MAX_DELAY_SECONDS + 15)

    def _watch(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            for record in self._records:
                if record.child.exited() and not self._restart(record):
                    return

    def _restart(self, record: _Record) -> bool:
        """Start the child again after its delay; False once it died too often (given up)."""
        now = time.monotonic()
        record.restarts = [t for t in record.restarts if now - t < self.policy.window_seconds]
        name = record.child.name
        if len(record.restarts) >= self.policy.limit:
            reason = (
                f"the {name} died {len(record.restarts) + 1} times within "
                f"{self.policy.window_seconds:.0f}s; giving up"
            )
            logger.error(reason)
            self.on_give_up(reason)
            return False
        delay = self.policy.delay(len(record.restarts))
        logger.warning("the %s died; starting it again in %.1fs", name, delay)
        if self._stop.wait(delay):
            return True
        try:
            record.child.start()
        except Exception:
            logger.exception("the %s did not start again", name)
        record.restarts.append(time.monotonic())
        return True
