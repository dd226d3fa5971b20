"""Request bodies read against a size limit: refused up front when the client declares too
much, and cut off as soon as the bytes actually received go over."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from starlette.datastructures import Headers
from starlette.requests import Request

from app.core.errors import PayloadTooLarge


def refuse_declared_oversize(
    headers: Headers, max_bytes: int, too_large: Callable[[int], PayloadTooLarge]
) -> None:
    """Raise `too_large(declared)` before reading a byte when Content-Length is over the limit."""
    declared = declared_length(headers)
    if declared is not None and declared > max_bytes:
        raise too_large(declared)


def declared_length(headers: Headers) -> int | None:
    """The body's Content-Length, when the client sent one."""
    declared = headers.get("content-length", "")
    return int(declared) if declared.isdigit() else None


async def stream_within(
    request: Request, max_bytes: int, too_large: Callable[[], PayloadTooLarge]
) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive; `too_large()` is raised once they pass `max_bytes`."""
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise too_large()
        yield chunk
