"""Decode and preprocess a request's images into a uint8 batch, in parallel, before it queues.

Pillow's decoders and torch's resize release the GIL, so a small shared thread pool turns a
request of many images into about as many cores' worth of work, and none of it happens while
the model's lock is held: a bad image fails its own request and nobody else's.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from app.ml.images import ImageDecodeError, ImageLimits, decode_image
from app.ml.preprocess import PixelSpec, resize_and_crop

# A JPEG may be decoded at 1/2, 1/4 or 1/8 scale while both sides stay at least this many times
# the model's input: the final resize then stays within two grey levels of a full decode (at 4x
# it reached three; tests/inference/test_pixels.py checks), and a 12-megapixel photo takes
# about a third of the time.
DRAFT_MARGIN = 6


class BadImage(Exception):
    """Image number `index` of a request does not decode; the message says why."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason


def image_pixels(payload: bytes, *, limits: ImageLimits, spec: PixelSpec) -> torch.Tensor:
    """One encoded image as the model's 3 x H x W uint8 input; `ImageDecodeError` if it is bad."""
    image = decode_image(payload, limits, min_side=DRAFT_MARGIN * max(spec.crop))
    return resize_and_crop(image, spec)


@dataclass(frozen=True)
class PendingPixels:
    """A request's images already decoding for one pixel spec, in request order."""

    spec: PixelSpec
    futures: list[Future[torch.Tensor]]


class PixelPool:
    """A bounded pool of threads shared by every request for decoding and preprocessing."""

    def __init__(self, threads: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pixels")

    def batch(
        self, payloads: Sequence[bytes], *, limits: ImageLimits, spec: PixelSpec
    ) -> torch.Tensor:
        """N x 3 x H x W uint8 pixels in request order; `BadImage` names the first bad one."""
        return gather([self.submit(payload, limits=limits, spec=spec) for payload in payloads])

    def submit(
        self, payload: bytes, *, limits: ImageLimits, spec: PixelSpec
    ) -> Future[torch.Tensor]:
        """Start decoding one image; `gather` collects a request's images in order."""
        return self._executor.submit(image_pixels, payload, limits=limits, spec=spec)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def gather(futures: Sequence[Future[torch.Tensor]]) -> torch.Tensor:
    """The decoded images stacked in order; `BadImage` names the first bad one."""
    try:
        rows = [_result(index, future).numpy() for index, future in enumerate(futures)]
        # Stacked by numpy: a torch op here would start one more OpenMP team in this request's
        # thread (see CachedModel.forward_thread).
        return torch.from_numpy(np.stack(rows))
    finally:
        cancel(futures)


def cancel(futures: Sequence[Future[torch.Tensor]]) -> None:
    """Drop the decoding that has not begun: after a bad image, or a request that failed."""
    for future in futures:
        future.cancel()


def _result(index: int, future: Future[torch.Tensor]) -> torch.Tensor:
    try:
        return future.result()
    except ImageDecodeError as error:
        raise BadImage(index, str(error)) from None
