"""How the api answers when a request cannot be served: always JSON, never internals.

Client mistakes get their 4xx; an unreachable database or object store gets 503 with
`Retry-After`; a full disk, wherever a write meets it (an upload, its images, the database),
gets 507; anything else is a 500 whose detail says nothing about the server, with the whole
story in the log.
"""

from __future__ import annotations

import errno
import logging
import math
import sqlite3
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.core.errors import ClientError
from app.core.objects.store import StoreUnavailable

logger = logging.getLogger(__name__)

DATABASE_RETRY_AFTER_SECONDS = 5
STORE_RETRY_AFTER_SECONDS = 5
DISK_FULL_DETAIL = "the server's disk is full; try again once space is freed"
# PostgreSQL's `disk_full` condition (class 53, insufficient resources).
POSTGRES_DISK_FULL = "53100"


def is_disk_full(error: BaseException) -> bool:
    """Whether a write failed for want of space: the OS's ENOSPC, or the database saying so
    (SQLite's SQLITE_FULL, PostgreSQL's disk_full), as SQLAlchemy wraps them."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    if not isinstance(error, DBAPIError):
        return False
    driver_error = error.orig
    if isinstance(driver_error, sqlite3.Error):
        return getattr(driver_error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return getattr(driver_error, "sqlstate", None) == POSTGRES_DISK_FULL


def public_validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors, with whatever they echo made printable as strict JSON: raw body bytes,
    NaN and infinities (JSON has no such numbers) and lone surrogates (UTF-8 has no such
    characters), which the client may send and the errors then repeat."""
    encoded = jsonable_encoder(
        [{key: value for key, value in error.items() if key != "ctx"} for error in errors],
        custom_encoder={bytes: lambda raw: raw.decode("utf-8", errors="replace")},
    )
    return [_json_safe(error) for error in encoded]


def _json_safe(value: Any) -> Any:
    if isinstance(value, str):
        # A lone surrogate cannot be encoded as UTF-8; it becomes U+FFFD.
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {_json_safe(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def disk_full_answer(error: Exception) -> JSONResponse:
    logger.error("disk full: %s", error)
    return JSONResponse(status_code=507, content={"detail": DISK_FULL_DETAIL})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ClientError)
    async def client_error(_request: Request, error: ClientError) -> JSONResponse:
        return JSONResponse(
            status_code=error.status_code, content=error.body(), headers=error.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        # The default handler fails (a 500) on a body that is not UTF-8: its input is bytes.
        return JSONResponse(
            status_code=422, content={"detail": public_validation_errors(list(error.errors()))}
        )

    @app.exception_handler(OSError)
    async def os_error(request: Request, error: OSError) -> JSONResponse:
        if is_disk_full(error):
            return disk_full_answer(error)
        return await unexpected_error(request, error)

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeoutError)
    async def database_unavailable(_request: Request, error: Exception) -> JSONResponse:
        if is_disk_full(error):
            return disk_full_answer(error)
        logger.error("database unavailable: %s", error)
        return JSONResponse(
            status_code=503,
            content={"detail": "the database is unavailable; try again shortly"},
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(_request: Request, error: StoreUnavailable) -> JSONResponse:
        logger.error("object store unavailable: %s", error)
        return JSONResponse(
            status_code=503,
            content={"detail": "the object store is unavailable; try again shortly"},
            headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)},
        )

    @app.exception_handler(Exception)
    async def unexpected_error(_request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=error)
        return JSONResponse(status_code=500, content={"detail": "internal server error"})
