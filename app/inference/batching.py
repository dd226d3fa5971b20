"""Classification requests for one model that wait while a forward pass runs share the next one.

There is no batching thread and no fixed wait: a request joins the model's queue, then takes the
model's lock. Whoever holds the lock runs one forward pass for everything queued (up to
`max_images`) and hands every waiting request its answer. An idle model answers a lone request
at once; a busy one answers many requests per pass, which is where a GPU (and even a CPU)
gets its throughput.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image


@dataclass
class PendingRequest:
    images: Sequence[Image.Image]
    done: threading.Event = field(default_factory=threading.Event)
    probabilities: torch.Tensor | None = None
    error: BaseException | None = None


# Takes every queued image in order, returns one row of label probabilities per image.
BatchForward = Callable[[list[Image.Image]], torch.Tensor]


class RequestQueue:
    """The requests waiting for one model, and how many forward passes served them."""

    def __init__(self) -> None:
        self._pending: list[PendingRequest] = []
        self._lock = threading.Lock()
        self.forward_passes = 0

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def run(
        self,
        images: Sequence[Image.Image],
        *,
        model_lock: threading.Lock,
        forward: BatchForward,
        max_images: int,
    ) -> torch.Tensor:
        """This request's probabilities, computed alone or in a pass shared with others."""
        request = PendingRequest(images)
        with self._lock:
            self._pending.append(request)
        while not request.done.is_set():
            with model_lock:
                # Another holder of the lock may have answered us while we waited for it.
                if not request.done.is_set():
                    self._serve_batch(forward, max_images)
        if request.error is not None:
            raise request.error
        assert request.probabilities is not None
        return request.probabilities

    def _take_batch(self, max_images: int) -> list[PendingRequest]:
        """The oldest requests whose images fit in one pass; always at least one request."""
        with self._lock:
            batch: list[PendingRequest] = []
            count = 0
            while self._pending and (
                not batch or count + len(self._pending[0].images) <= max_images
            ):
                request = self._pending.pop(0)
                batch.append(request)
                count += len(request.images)
            return batch

    def _serve_batch(self, forward: BatchForward, max_images: int) -> None:
        batch = self._take_batch(max_images)
        try:
            probabilities = forward([image for request in batch for image in request.images])
            self.forward_passes += 1
            for request, rows in zip(
                batch, probabilities.split([len(request.images) for request in batch]), strict=True
            ):
                request.probabilities = rows
        except BaseException as error:
            # One bad pass fails every request in it, each with the same error.
            for request in batch:
                request.error = error
        finally:
            for request in batch:
                request.done.set()
