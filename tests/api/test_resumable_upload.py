"""`/uploads`: a zip sent in chunks, resumed after a lost connection, completed into a dataset;
every chunk out of place refused, and nothing left behind by a refused or abandoned upload."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.core.config import Settings
from app.core.db import session_scope
from app.core.objects.factory import open_store
from app.core.objects.folders import read_manifest as read_published_manifest
from app.core.storage import dataset_dir
from app.datasets.resumable import object_prefix, staging_dir
from app.datasets.upload_expiry import remove_expired_uploads
from app.main import create_app
from app.ml.manifest import read_manifest
from app.orm.base import utcnow
from app.orm.tables import Dataset, Upload, UploadPart, UploadReservation
from tests.api.tenants import bearer, new_key
from tests.datasets_helpers import class_zip
from tests.object_store import SeaweedS3

CHUNK = 512
ARCHIVE = class_zip({"circle": 6, "square": 6})


@pytest.fixture(scope="module")
def chunked(settings: Settings) -> Settings:
    """Chunks of at most 512 bytes, so that a small zip takes several."""
    return settings.model_copy(update={"upload_chunk_max_bytes": CHUNK})


@pytest.fixture(scope="module")
def uploads(chunked: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(chunked, run_reconciler=False)) as test_client:
        yield test_client


def begin(client: TestClient, payload: bytes = ARCHIVE, **body: Any) -> dict[str, Any]:
    response = client.post("/uploads", json={"size": len(payload), **body})
    assert response.status_code == 201, response.text
    started: dict[str, Any] = response.json()
    return started


def send(
    client: TestClient, upload_id: str, payload: bytes, offset: int, length: int = CHUNK
) -> Any:
    return client.patch(
        f"/uploads/{upload_id}",
        content=payload[offset : offset + length],
        headers={"Upload-Offset": str(offset), "Content-Type": "application/octet-stream"},
    )


def send_all(client: TestClient, upload_id: str, payload: bytes, start: int = 0) -> None:
    for offset in range(start, len(payload), CHUNK):
        response = send(client, upload_id, payload, offset)
        assert response.status_code == 200, response.text
        assert response.json()["received"] == min(offset + CHUNK, len(payload))


def chunk_keys(settings: Settings, upload_id: str) -> list[str]:
    return open_store(settings).list(object_prefix(upload_id))


def rows_of(settings: Settings, upload_id: str) -> tuple[int, int, int]:
    """The upload's rows: its own, its chunks', its quota reservation's."""
    with session_scope(settings.resolved_database_url) as session:
        return (
            session.scalar(select(func.count()).where(Upload.id == upload_id)) or 0,
            session.scalar(select(func.count()).where(UploadPart.upload_id == upload_id)) or 0,
            session.scalar(select(func.count()).where(UploadReservation.id == upload_id)) or 0,
        )


def test_a_zip_sent_in_chunks_becomes_the_dataset_of_the_upload_s_id(
    uploads: TestClient, chunked: Settings
) -> None:
    assert len(ARCHIVE) > 3 * CHUNK  # several chunks, the last one short
    started = begin(uploads, filename="shapes.zip", name="chunked shapes")
    assert started["received"] == 0 and started["status"] == "receiving"
    assert started["chunk_max_bytes"] == CHUNK and started["dataset_id"] is None
    upload_id = started["id"]
    send_all(uploads, upload_id, ARCHIVE)
    assert len(chunk_keys(chunked, upload_id)) == -(-len(ARCHIVE) // CHUNK)

    completed = uploads.post(f"/uploads/{upload_id}/complete")
    assert completed.status_code == 201, completed.text
    dataset = completed.json()
    assert dataset["id"] == upload_id and dataset["status"] == "ready"
    assert dataset["name"] == "chunked shapes" and dataset["num_images"] == 12
    assert uploads.get(f"/datasets/{upload_id}").json()["classes"] == ["circle", "square"]
    manifest = read_manifest(dataset_dir(chunked.data_dir, upload_id))
    assert len(manifest.items) == 12
    # What is left of the upload: its row, to say what it became; no chunks, no reservation.
    state = uploads.get(f"/uploads/{upload_id}").json()
    assert state["status"] == "completed" and state["dataset_id"] == upload_id
    assert chunk_keys(chunked, upload_id) == []
    assert rows_of(chunked, upload_id) == (1, 0, 0)
    assert not staging_dir(chunked.data_dir, upload_id).exists()
    with session_scope(chunked.resolved_database_url) as session:
        assert session.get(Dataset, upload_id).upload_bytes == len(ARCHIVE)  # type: ignore[union-attr]

    again = uploads.post(f"/uploads/{upload_id}/complete")
    assert again.status_code == 409 and "completed" in again.json()["detail"]


def test_after_a_lost_connection_the_client_asks_how_far_it_got_and_sends_the_rest(
    uploads: TestClient,
) -> None:
    upload_id = begin(uploads)["id"]
    three_quarters = (len(ARCHIVE) * 3 // 4) // CHUNK * CHUNK
    send_all(uploads, upload_id, ARCHIVE[:three_quarters])
    # The client resends the chunk whose answer it lost, and one beyond what was stored.
    for offset in (three_quarters - CHUNK, three_quarters + CHUNK):
        refused = send(uploads, upload_id, ARCHIVE, offset)
        assert refused.status_code == 409
        assert f"Upload-Offset: {three_quarters}" in refused.json()["detail"]
    state = uploads.get(f"/uploads/{upload_id}").json()
    assert state["received"] == three_quarters and state["status"] == "receiving"

    early = uploads.post(f"/uploads/{upload_id}/complete")
    assert early.status_code == 409 and f"has {three_quarters} of" in early.json()["detail"]
    send_all(uploads, upload_id, ARCHIVE, start=state["received"])
    completed = uploads.post(f"/uploads/{upload_id}/complete")
    assert completed.status_code == 201, completed.text
    assert completed.json()["num_images"] == 12


@pytest.mark.parametrize(
    ("headers", "content", "status", "detail"),
    [
        ({}, b"x", 422, "Upload-Offset"),
        ({"Upload-Offset": "-1"}, b"x", 422, "is not a byte offset"),
        ({"Upload-Offset": "zero"}, b"x", 422, "is not a byte offset"),
        ({"Upload-Offset": "0"}, b"", 422, "chunk: empty"),
        ({"Upload-Offset": "0"}, b"x" * (CHUNK + 1), 413, f"at most {CHUNK} bytes fit here"),
    ],
)
def test_a_chunk_out_of_place_is_refused_and_changes_nothing(
    uploads: TestClient,
    chunked: Settings,
    headers: dict[str, str],
    content: bytes,
    status: int,
    detail: str,
) -> None:
    upload_id = begin(uploads)["id"]
    response = uploads.patch(f"/uploads/{upload_id}", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert detail in str(response.json()["detail"])
    assert uploads.get(f"/uploads/{upload_id}").json()["received"] == 0
    assert chunk_keys(chunked, upload_id) == []
    assert not staging_dir(chunked.data_dir, upload_id).exists()


def test_a_chunk_past_the_declared_size_is_refused(uploads: TestClient) -> None:
    payload = ARCHIVE[: CHUNK + 10]
    upload_id = begin(uploads, payload)["id"]
    assert send(uploads, upload_id, payload, 0).status_code == 200
    over = uploads.patch(
        f"/uploads/{upload_id}", content=b"x" * 11, headers={"Upload-Offset": str(CHUNK)}
    )
    assert over.status_code == 413 and "10 bytes of the upload left" in over.json()["detail"]
    assert uploads.get(f"/uploads/{upload_id}").json()["received"] == CHUNK


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"size": 0}, 422, "size"),
        ({"size": 10, "surprise": 1}, 422, "surprise"),
        ({"size": 10, "name": "n" * 201}, 422, "name"),
    ],
)
def test_a_bad_start_is_refused(
    uploads: TestClient, body: dict[str, Any], status: int, detail: str
) -> None:
    response = uploads.post("/uploads", json=body)
    assert response.status_code == status
    assert detail in str(response.json()["detail"])


def test_an_upload_over_the_size_limit_is_refused_before_a_byte_is_sent(
    chunked: Settings,
) -> None:
    small = chunked.model_copy(update={"max_upload_bytes": 1000})
    with TestClient(create_app(small, run_reconciler=False)) as client:
        response = client.post("/uploads", json={"size": 1001})
    assert response.status_code == 413 and "over the upload limit of 1000" in response.text


def test_a_zip_the_server_refuses_takes_its_upload_and_chunks_with_it(
    uploads: TestClient, chunked: Settings
) -> None:
    payload = b"this is not a zip archive at all" * 200
    upload_id = begin(uploads, payload, filename="broken.zip")["id"]
    send_all(uploads, upload_id, payload)
    refused = uploads.post(f"/uploads/{upload_id}/complete")
    assert refused.status_code == 400, refused.text
    # The same refusal as POST /datasets gives the same bytes.
    direct = uploads.post("/datasets", files={"file": ("broken.zip", payload, "application/zip")})
    assert refused.json()["detail"] == direct.json()["detail"]
    assert uploads.get(f"/uploads/{upload_id}").status_code == 404
    assert uploads.get(f"/datasets/{upload_id}").status_code == 404
    assert chunk_keys(chunked, upload_id) == [] and rows_of(chunked, upload_id) == (0, 0, 0)
    assert not dataset_dir(chunked.data_dir, upload_id).exists()


def test_an_abandoned_upload_is_removed_with_its_chunks(
    uploads: TestClient, chunked: Settings
) -> None:
    upload_id = begin(uploads)["id"]
    send_all(uploads, upload_id, ARCHIVE[: 2 * CHUNK])
    assert len(chunk_keys(chunked, upload_id)) == 2
    assert uploads.delete(f"/uploads/{upload_id}").status_code == 204
    assert uploads.get(f"/uploads/{upload_id}").status_code == 404
    assert chunk_keys(chunked, upload_id) == [] and rows_of(chunked, upload_id) == (0, 0, 0)
    assert send(uploads, upload_id, ARCHIVE, 2 * CHUNK).status_code == 404


def test_the_janitor_removes_an_upload_that_took_no_chunk_for_its_expiry(
    uploads: TestClient, chunked: Settings
) -> None:
    idle = begin(uploads)["id"]
    send_all(uploads, idle, ARCHIVE[:CHUNK])
    fresh = begin(uploads)["id"]
    with session_scope(chunked.resolved_database_url) as session:
        session.get(Upload, idle).updated_at = utcnow() - timedelta(  # type: ignore[union-attr]
            seconds=chunked.upload_expiry_seconds + 60
        )
    removed = remove_expired_uploads(chunked)
    assert idle in removed and fresh not in removed
    assert rows_of(chunked, idle) == (0, 0, 0) and chunk_keys(chunked, idle) == []
    assert uploads.get(f"/uploads/{fresh}").status_code == 200


def test_another_tenant_s_upload_is_not_found_and_a_quota_too_small_refuses_the_start(
    chunked: Settings,
) -> None:
    guarded = chunked.model_copy(
        update={"auth_disabled": False, "tenant_max_upload_bytes": len(ARCHIVE) * 5 // 2}
    )
    mine = bearer(new_key(guarded, f"u{uuid.uuid4().hex[:8]}"))
    theirs = bearer(new_key(guarded, f"u{uuid.uuid4().hex[:8]}"))
    with TestClient(create_app(guarded, run_reconciler=False)) as client:
        response = client.post("/uploads", json={"size": len(ARCHIVE)}, headers=mine)
        assert response.status_code == 201
        upload_id = response.json()["id"]
        for method, path in [
            ("GET", f"/uploads/{upload_id}"),
            ("PATCH", f"/uploads/{upload_id}"),
            ("POST", f"/uploads/{upload_id}/complete"),
            ("DELETE", f"/uploads/{upload_id}"),
        ]:
            answer = client.request(
                method, path, headers={**theirs, "Upload-Offset": "0"}, content=b"x"
            )
            assert answer.status_code == 404, (method, path, answer.text)
        # The first upload's reservation counts: two more of its size do not fit.
        assert client.post("/uploads", json={"size": len(ARCHIVE)}, headers=mine).status_code == 201
        over = client.post("/uploads", json={"size": len(ARCHIVE)}, headers=mine)
        assert over.status_code == 429 and "Retry-After" in over.headers


def test_chunks_sent_to_two_api_hosts_that_share_only_a_bucket_make_one_dataset(
    chunked: Settings, seaweedfs: SeaweedS3, s3_bucket: str, tmp_path: Path
) -> None:
    """Behind a load balancer each chunk may reach another api host: none keeps a chunk on its
    own disk, so the host that completes the upload finds every chunk in the bucket."""
    bucket = seaweedfs.settings(f"s3://{s3_bucket}/uploads-{uuid.uuid4().hex[:8]}")
    shared = {
        name: getattr(bucket, name)
        for name in ("storage_url", "s3_endpoint_url", "s3_access_key_id", "s3_secret_access_key")
    }
    hosts = [
        chunked.model_copy(update={**shared, "data_dir": tmp_path / name}) for name in ("a", "b")
    ]
    with (
        TestClient(create_app(hosts[0], run_reconciler=False)) as first,
        TestClient(create_app(hosts[1], run_reconciler=False)) as second,
    ):
        upload_id = begin(first, name="two hosts")["id"]
        for index, offset in enumerate(range(0, len(ARCHIVE), CHUNK)):
            host = (first, second)[index % 2]
            assert send(host, upload_id, ARCHIVE, offset).status_code == 200
        assert len(chunk_keys(hosts[0], upload_id)) == -(-len(ARCHIVE) // CHUNK)
        completed = second.post(f"/uploads/{upload_id}/complete")
        assert completed.status_code == 201, completed.text
        assert completed.json()["num_images"] == 12
    published = read_published_manifest(open_store(hosts[0]), f"datasets/{upload_id}")
    # The images and the dataset's manifest (its split), published for workers on other hosts.
    assert published is not None and len(published.files) == 12 + 1
    assert chunk_keys(hosts[0], upload_id) == []
    for name in ("a", "b"):
        assert not staging_dir(tmp_path / name, upload_id).exists()


def test_a_completion_that_died_with_its_api_process_is_taken_over_once_stale(
    uploads: TestClient, chunked: Settings
) -> None:
    upload_id = begin(uploads)["id"]
    send_all(uploads, upload_id, ARCHIVE)
    # What an api process killed mid-completion leaves: the claim, and a half-made folder.
    with session_scope(chunked.resolved_database_url) as session:
        row = session.get(Upload, upload_id)
        assert row is not None
        row.status = "completing"
    left_behind = dataset_dir(chunked.data_dir, upload_id)
    (left_behind / "images").mkdir(parents=True)
    busy = uploads.post(f"/uploads/{upload_id}/complete")
    assert busy.status_code == 409 and "completing" in busy.json()["detail"]
    with session_scope(chunked.resolved_database_url) as session:
        row = session.get(Upload, upload_id)
        assert row is not None
        row.updated_at = utcnow() - timedelta(seconds=chunked.orphan_upload_grace_seconds + 1)
    completed = uploads.post(f"/uploads/{upload_id}/complete")
    assert completed.status_code == 201, completed.text
    assert completed.json()["num_images"] == 12


def test_an_upload_deleted_while_a_chunk_arrives_answers_404_and_keeps_no_chunk(
    uploads: TestClient, chunked: Settings
) -> None:
    upload_id = begin(uploads)["id"]
    with TestClient(create_app(chunked, run_reconciler=False)) as other_host:

        def body() -> Iterator[bytes]:
            yield ARCHIVE[: CHUNK // 2]
            assert other_host.delete(f"/uploads/{upload_id}").status_code == 204
            yield ARCHIVE[CHUNK // 2 : CHUNK]

        response = uploads.patch(
            f"/uploads/{upload_id}", content=body(), headers={"Upload-Offset": "0"}
        )
    assert response.status_code == 404, response.text
    assert chunk_keys(chunked, upload_id) == [] and rows_of(chunked, upload_id) == (0, 0, 0)
