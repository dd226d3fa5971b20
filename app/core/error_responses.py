"""The error answers each router documents in the OpenAPI schema: `{"detail": ...}` bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    detail: Any = Field(
        description="What is wrong, in words; for invalid fields, the list of them with where "
        "each is (`loc`), what is wrong (`msg`) and its type."
    )


MEANINGS = {
    400: "The request is malformed (a body that is not what its type says, a bad archive).",
    401: "No API key, or one that is unknown or revoked.",
    403: "The key is good but not allowed here (an admin key is needed).",
    404: "No such id (or one of another tenant).",
    409: "The row is in the wrong state for this (not ready, still in use, finished).",
    413: "Too large: the body, an image, or too many images or texts.",
    415: "The body is neither JSON nor multipart/form-data.",
    422: "Invalid input: the message names the field, image or file.",
    429: "A quota of the tenant is used up; `Retry-After` says when to try again.",
    503: "The database or the broker does not answer; `Retry-After` says when to try again.",
    507: "The server's disk is too full to take an upload.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": MEANINGS[code]} for code in codes}
