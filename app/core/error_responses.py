"""The error answers each router documents in the OpenAPI schema: `{"detail": ...}` bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class FileError(BaseModel):
    file: str = Field(description="The file's path inside the upload.")
    error: str = Field(description="Why it cannot be used.")


class ErrorBody(BaseModel):
    detail: Any = Field(
        description="What is wrong, in words; for invalid fields, the list of them with where "
        "each is (`loc`), what is wrong (`msg`) and its type."
    )
    errors: list[FileError] | None = Field(
        None,
        description="For an upload refused for its images: each file that could not be used, "
        "in archive order (at most 200; `files_refused` counts them all).",
    )
    files_checked: int | None = Field(None, description="With `errors`: the images tried.")
    files_refused: int | None = Field(None, description="With `errors`: the images refused.")


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
    507: "The server's disk is too full to store what the request writes.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": MEANINGS[code]} for code in codes}
