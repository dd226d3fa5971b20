"""Requests for one model that wait while a forward pass runs share the next one.

There is no batching thread and no fixed wait: a request joins the model's queue, then takes the
model's lock. Whoever holds the lock runs one pass for everything queued (up to the pass's
limits) and hands every waiting request its answer. An idle model answers a lone request at
once; a busy one answers many requests per pass, which is where a GPU (and even a CPU) gets its
throughput. What a pass computes is the caller's business: the queue only groups and hands out.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar


class Work(Protocol):
    """What one request asks of a pass, as far as the pass's limits are concerned."""

    @property
    def image_count(self) -> int: ...

    @property
    def text_count(self) -> int: ...


@dataclass(frozen=True)
class PassLimits:
    max_images: int
    max_texts: int


WorkT = TypeVar("WorkT", bound=Work)
ResultT = TypeVar("ResultT")


@dataclass
class PendingRequest(Generic[WorkT, ResultT]):
    work: WorkT
    done: threading.Event = field(default_factory=threading.Event)
    result: ResultT | None = None
    error: BaseException | None = None
    answered: bool = False


# Takes the work of every request in a pass, in order; returns one result per request.
ServePass = Callable[[list[WorkT]], list[ResultT]]


class RequestQueue(Generic[WorkT, ResultT]):
    """The requests waiting for one model, and how many passes served them."""

    def __init__(self) -> None:
        self._pending: deque[PendingRequest[WorkT, ResultT]] = deque()
        self._lock = threading.Lock()
        self.forward_passes = 0

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def run(
        self,
        work: WorkT,
        *,
        model_lock: threading.Lock,
        serve: ServePass[WorkT, ResultT],
        limits: PassLimits,
    ) -> ResultT:
        """This request's result, computed alone or in a pass shared with others."""
        request: PendingRequest[WorkT, ResultT] = PendingRequest(work)
        with self._lock:
            self._pending.append(request)
        while not request.done.is_set():
            with model_lock:
                # Another holder of the lock may have answered us while we waited for it.
                if not request.done.is_set():
                    self._serve_batch(serve, limits)
        if request.error is not None:
            raise request.error
        assert request.answered
        return request.result  # type: ignore[return-value]  # answered: the pass set it

    def _take_batch(self, limits: PassLimits) -> list[PendingRequest[WorkT, ResultT]]:
        """The oldest requests that fit in one pass; always at least one request."""
        with self._lock:
            batch: list[PendingRequest[WorkT, ResultT]] = []
            images = texts = 0
            while self._pending:
                work = self._pending[0].work
                fits = (
                    images + work.image_count <= limits.max_images
                    and texts + work.text_count <= limits.max_texts
                )
                if batch and not fits:
                    break
                batch.append(self._pending.popleft())
                images += work.image_count
                texts += work.text_count
            return batch

    def _serve_batch(self, serve: ServePass[WorkT, ResultT], limits: PassLimits) -> None:
        batch = self._take_batch(limits)
        try:
            if not self._pass(serve, batch) and len(batch) > 1:
                # The shared pass failed: serve each request alone, so that only the request
                # at fault fails (each then carries its own error).
                for request in batch:
                    self._pass(serve, [request])
        except BaseException as error:
            for request in batch:
                if not request.answered:
                    request.error = error
            raise
        finally:
            for request in batch:
                request.done.set()

    def _pass(
        self, serve: ServePass[WorkT, ResultT], batch: list[PendingRequest[WorkT, ResultT]]
    ) -> bool:
        """One pass for `batch`; False when it failed, each request then holding the error."""
        try:
            results = serve([request.work for request in batch])
        except Exception as error:
            for request in batch:
                request.error = error
            return False
        self.forward_passes += 1
        for request, result in zip(batch, results, strict=True):
            request.result, request.error, request.answered = result, None, True
        return True
