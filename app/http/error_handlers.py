"""How the api answers when a request cannot be served: always JSON, never internals.

Client mistakes get their 4xx; an unreachable database gets 503 with `Retry-After`; anything
else is a 500 whose detail says nothing about the server, with the whole story in the log.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.core.errors import ClientError

logger = logging.getLogger(__name__)

DATABASE_RETRY_AFTER_SECONDS = 5


def public_validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors, with inputs that are not text (raw body bytes) made printable."""
    return jsonable_encoder(
        [{key: value for key, value in error.items() if key != "ctx"} for error in errors],
        custom_encoder={bytes: lambda raw: raw.decode("utf-8", errors="replace")},
    )


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

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeoutError)
    async def database_unavailable(_request: Request, error: Exception) -> JSONResponse:
        logger.error("database unavailable: %s", error)
        return JSONResponse(
            status_code=503,
            content={"detail": "the database is unavailable; try again shortly"},
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )

    @app.exception_handler(Exception)
    async def unexpected_error(_request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=error)
        return JSONResponse(status_code=500, content={"detail": "internal server error"})
