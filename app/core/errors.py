"""Errors a service raises for the client's mistakes; the app turns them into JSON answers."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """A 4xx answer: `detail` says what is wrong, naming the field or the file."""

    status_code = 400
    headers: dict[str, str] | None = None
    # Fields the answer carries beside `detail` (say, a list of per-file errors).
    extra: dict[str, Any] | None = None

    def __init__(self, detail: Any, *, status_code: int | None = None) -> None:
        super().__init__(detail if isinstance(detail, str) else repr(detail))
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, **(self.extra or {})}


class Unauthorized(ClientError):
    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}  # noqa: RUF012  # read-only


class NotFound(ClientError):
    status_code = 404


class Conflict(ClientError):
    status_code = 409


class PayloadTooLarge(ClientError):
    status_code = 413


class InsufficientStorage(ClientError):
    status_code = 507


class Unprocessable(ClientError):
    status_code = 422


class UnusableFiles(Unprocessable):
    """Some files of an upload could not be used: `errors` lists each one (`file`, `error`)."""

    def __init__(self, failures: list[tuple[str, str]], *, total: int, listed: int) -> None:
        first_file, first_error = failures[0]
        more = f" (and {len(failures) - 1} more: see `errors`)" if len(failures) > 1 else ""
        super().__init__(f"{first_file}: {first_error}{more}")
        self.extra = {
            "errors": [{"file": name, "error": error} for name, error in failures[:listed]],
            "files_checked": total,
            "files_refused": len(failures),
        }


class TooManyRequests(ClientError):
    """A tenant's quota is used up: 429, with when to try again."""

    status_code = 429

    def __init__(self, detail: str, *, retry_after_seconds: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(max(1, retry_after_seconds))}
