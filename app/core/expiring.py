"""Values remembered for a while, shared by the threads of one process.

The api's checked keys and served models' rows both live in one: each entry has its own
deadline, and past `max_entries` the whole memory starts over (cheaper than tracking age, and
harmless: a forgotten entry is only read again).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

Key = TypeVar("Key")
Value = TypeVar("Value")


class ExpiringCache(Generic[Key, Value]):
    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: dict[Key, tuple[Value, float]] = {}

    def get(self, key: Key) -> Value | None:
        """The value, or None when it was never put, has expired or was forgotten."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def put(self, key: Key, value: Value, seconds: float) -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (value, time.monotonic() + seconds)

    def forget(self, matches: Callable[[Key], bool]) -> None:
        """Drop every entry whose key matches, expired or not."""
        with self._lock:
            for key in [key for key in self._entries if matches(key)]:
                del self._entries[key]
