"""A real webhook receiver on loopback for the tests, and the check a receiver makes."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """Records every POST; answers each delivery id with `failures_first` 500s, then 200."""

    port: int = 0
    failures_first: int = 0
    received: list[Received] = field(default_factory=list)
    tries: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def answer(self, request: Received) -> int:
        with self.lock:
            self.received.append(request)
            delivery_id = request.headers.get("Clipft-Delivery", "")
            self.tries[delivery_id] += 1
            return 500 if self.tries[delivery_id] <= self.failures_first else 200

    def accepted_ids(self) -> list[str]:
        """The delivery ids this receiver answered 200, once per answer."""
        answered: Counter[str] = Counter()
        accepted = []
        for request in self.received:
            delivery_id = request.event["id"]
            answered[delivery_id] += 1
            if answered[delivery_id] > self.failures_first:
                accepted.append(delivery_id)
        return accepted


def serve(receiver: Receiver) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            request = Received(self.path, dict(self.headers.items()), self.rfile.read(length))
            status = receiver.answer(request)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


def documented_check() -> str:
    """The Python block under docs/webhooks.md's "Verifying the signature"."""
    section = DOCS.read_text().split("## Verifying the signature", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def verify(secret: str, header: str, body: bytes, *, now: float | None = None) -> bool:
    """Run docs/webhooks.md's check as it is written there, on a received delivery."""
    names: dict[str, Any] = {
        "hmac": hmac,
        "hashlib": hashlib,
        "time": _FixedTime(now) if now is not None else time,
        "secret": secret,
        "signature_header": header,
        "body": body.decode(),
    }
    try:
        exec(documented_check(), names)  # the docs' own text, nothing else
    except AssertionError:
        return False
    return True


@dataclass(frozen=True)
class _FixedTime:
    now: float

    def time(self) -> float:
        return self.now


class Clock:
    """The sender's time, moved by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
