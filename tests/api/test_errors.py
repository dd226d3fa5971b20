"""Bad requests and unreachable parts answer 4xx/503 JSON that says what is wrong, never 500."""

from __future__ import annotations

import errno
import socket
import sqlite3

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from app.core.config import Settings
from app.core.error_handlers import is_disk_full
from app.main import create_app


@pytest.mark.parametrize("path", ["/jobs", "/datasets", "/models"])
def test_an_offset_beyond_64_bits_is_422_naming_it(client: TestClient, path: str) -> None:
    response = client.get(f"{path}?offset=99999999999999999999999")
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "offset"] and "less than or equal to" in error["msg"]
    assert client.get(f"{path}?offset={2**63 - 1}").json()["items"] == []


def test_a_predict_body_that_is_not_utf8_is_422(client: TestClient) -> None:
    response = client.post(
        "/predict",
        content=b'{"model_id": "\xff\xfe", "images": []}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["type"] == "json_invalid" and error["loc"] == ["body"]


@pytest.mark.parametrize(
    ("path", "body", "loc", "echoed"),
    [
        (
            "/jobs",
            b'{"dataset_id": "d", "base_model": "tiny-clip", "hyperparameters": '
            b'{"learning_rate": NaN}}',
            ["body", "hyperparameters", "learning_rate"],
            "NaN",
        ),
        (
            "/jobs",
            b'{"dataset_id": "d", "base_model": "tiny-clip", "hyperparameters": '
            b'{"learning_rate": Infinity}}',
            ["body", "hyperparameters", "learning_rate"],
            "Infinity",
        ),
        (
            "/jobs",
            b'{"dataset_id": "d", "base_model": "tiny-clip", "hyperparameters": '
            b'{"weight_decay": -Infinity}}',
            ["body", "hyperparameters", "weight_decay"],
            "-Infinity",
        ),
        ("/predict", b'{"model_id": "m", "images": [], "top_k": NaN}', ["body", "top_k"], "NaN"),
        (
            "/jobs",
            b'{"dataset_id": "a\\ud800", "base_model": "tiny-clip"}',
            ["body", "dataset_id"],
            "a\ufffd",
        ),
    ],
)
def test_numbers_json_lacks_and_lone_surrogates_are_422_echoed_printably(
    client: TestClient, path: str, body: bytes, loc: list[str], echoed: str
) -> None:
    # JSON has no NaN or infinities and UTF-8 no lone surrogates, yet Python's JSON reader
    # takes them: the error that repeats them must still be strict JSON.
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == loc and error["input"] == echoed


def test_a_lone_surrogate_in_a_field_name_is_422(client: TestClient) -> None:
    response = client.post(
        "/jobs",
        content=b'{"dataset_id": "d", "base_model": "tiny-clip", "\\udc00": 1}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body"] and "\ufffd" in error["input"]


def test_postgresql_and_sqlite_disk_full_errors_read_as_a_full_disk() -> None:
    # A full PostgreSQL disk cannot be made in a test; its error, as psycopg and SQLAlchemy
    # raise it, can. SQLite's is made for real in tests/api/test_disk_full.py.
    def wrapped(driver_error: Exception) -> OperationalError:
        return OperationalError("INSERT INTO job ...", {}, driver_error)

    full_sqlite = sqlite3.OperationalError("database or disk is full")
    full_sqlite.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    assert is_disk_full(wrapped(psycopg.errors.DiskFull("could not extend file")))
    assert is_disk_full(wrapped(full_sqlite))
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_disk_full(wrapped(psycopg.errors.ConnectionTimeout("timeout")))
    assert not is_disk_full(wrapped(sqlite3.OperationalError("database is locked")))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.faults
def test_an_unreachable_database_is_503_with_retry_after(settings: Settings) -> None:
    unreachable = settings.model_copy(
        update={"database_url": f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/x"}
    )
    with TestClient(create_app(unreachable, run_reconciler=False)) as offline:
        for response in (
            offline.get("/jobs/some-id"),
            offline.get("/jobs"),
            offline.post("/jobs", json={"dataset_id": "d", "base_model": "tiny-clip"}),
        ):
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "5"
            assert response.json() == {"detail": "the database is unavailable; try again shortly"}
