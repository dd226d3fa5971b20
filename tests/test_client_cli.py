"""The command-line client against a real `clipft api` process, with an API key."""

from __future__ import annotations

import io
import re
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from app.auth.keys import create_key
from app.cli import app as cli_app
from app.core.config import Settings
from app.core.db import session_scope
from app.core.migrate import upgrade_to_head
from app.jobs import lifecycle
from app.local_stack import stop_process
from app.ml.synthetic import photo_like
from app.orm.base import utcnow
from tests.clipft_process import start_clipft, wait_until_answering
from tests.cutting_proxy import cutting_proxy
from tests.datasets_helpers import class_entries
from tests.model_factory import register_model

TENANT = "cli-users"
CHUNK_BYTES = 32 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str, str]]:
    data_dir = tmp_path_factory.mktemp("cli-server")
    settings = Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'clipft.db'}",
        redis_url=None,
        auth_disabled=False,
        val_fraction=0.25,
    )
    upgrade_to_head(settings.resolved_database_url)
    with session_scope(settings.resolved_database_url) as session:
        key = create_key(session=session, name="cli", tenant=TENANT, admin=False).key
    log_path = data_dir / "api.log"
    api, url = start_clipft(
        "api",
        env={
            "CLIPFT_DATA_DIR": str(data_dir),
            "CLIPFT_DATABASE_URL": settings.resolved_database_url,
            "CLIPFT_AUTH_DISABLED": "false",
            "CLIPFT_VAL_FRACTION": "0.25",
            "CLIPFT_DEVICE": "cpu",
            # Uploads of a few hundred kilobytes then take several chunks.
            "CLIPFT_UPLOAD_CHUNK_MAX_BYTES": str(CHUNK_BYTES),
        },
        log_path=log_path,
    )
    try:
        wait_until_answering(api, f"{url}/openapi.json", log_path, timeout=60)
        yield settings, url, key
    finally:
        stop_process(api, timeout_seconds=30)


def run(url: str, key: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli_app, list(args), env={"CLIPFT_URL": url, "CLIPFT_API_KEY": key})
    return result.exit_code, result.output


def test_upload_a_folder_start_a_job_and_follow_it_to_the_end(
    server: tuple[Settings, str, str], tmp_path: Path
) -> None:
    settings, url, key = server
    folder = tmp_path / "shapes"
    for name, payload in class_entries({"circle": 8, "square": 8}):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(payload)
    code, output = run(url, key, "datasets", "upload", str(folder), "--name", "cli shapes")
    assert code == 0, output
    assert '"status": "ready"' in output and '"num_images": 16' in output
    dataset_id = output.split('"id": "')[1].split('"')[0]

    code, output = run(url, key, "jobs", "create", dataset_id, "--set", "epochs=2")
    assert code == 0, output
    job_id = output.splitlines()[0]
    assert '"epochs": 2' in output

    def worker_meanwhile() -> None:
        time.sleep(0.5)
        with session_scope(settings.resolved_database_url) as session:
            lifecycle.claim(session, job_id, owner="cli-test", now=utcnow())
        time.sleep(0.5)
        with session_scope(settings.resolved_database_url) as session:
            lifecycle.succeed(
                session,
                job_id,
                owner="cli-test",
                now=utcnow(),
                model_id="m" * 32,
                report=None,
                message="succeeded",
                data={},
            )

    thread = threading.Thread(target=worker_meanwhile)
    thread.start()
    code, output = run(url, key, "jobs", "follow", job_id)
    thread.join()
    assert code == 0, output
    assert "[status] running (attempt 1 of 3)" in output
    assert f"job {job_id} succeeded" in output

    # A job that fails makes `follow` exit non-zero.
    code, output = run(url, key, "jobs", "create", dataset_id)
    failing = output.splitlines()[0]
    with session_scope(settings.resolved_database_url) as session:
        lifecycle.claim(session, failing, owner="cli-test", now=utcnow())
        lifecycle.fail(session, failing, owner="cli-test", now=utcnow(), error="broken")
    code, output = run(url, key, "jobs", "follow", failing)
    assert code == 1 and f"job {failing} failed" in output


def test_predict_prints_a_table_and_export_writes_the_zip(
    server: tuple[Settings, str, str], tmp_path: Path
) -> None:
    settings, url, key = server
    model_id = register_model(settings=settings, tenant=TENANT)
    image = tmp_path / "photo.png"
    photo_like(64, 48, seed=4).save(image)
    code, output = run(url, key, "predict", model_id, str(image), "--top-k", "2")
    assert code == 0, output
    assert output.splitlines()[0] == "photo.png"
    assert len([line for line in output.splitlines() if "%" in line]) == 2
    code, output = run(url, key, "predict", model_id, str(image), "--min-confidence", "1")
    assert code == 0, output
    assert output.splitlines()[0] == "photo.png  (no label: below threshold 1)"
    assert len([line for line in output.splitlines() if "%" in line]) == 3

    code, output = run(url, key, "predict", model_id, str(image), "--text", "a red circle")
    assert code == 0, output
    assert "a red circle" in output

    target = tmp_path / "model.zip"
    code, output = run(url, key, "models", "export", model_id, "-o", str(target))
    assert code == 0, output
    with zipfile.ZipFile(target) as archive:
        assert {"README.md", "model.safetensors"} <= set(archive.namelist())
    onnx = tmp_path / "model-onnx.zip"
    code, output = run(url, key, "models", "export", model_id, "--format", "onnx", "-o", str(onnx))
    assert code == 0, output
    with zipfile.ZipFile(onnx) as archive:
        assert {"image_encoder.onnx", "text_encoder.onnx", "classifier.json"} <= set(
            archive.namelist()
        )


def test_a_wrong_key_is_an_error_the_user_can_read(server: tuple[Settings, str, str]) -> None:
    _, url, _ = server
    code, output = run(url, "clipft_" + "0" * 32 + "_" + "x" * 43, "datasets", "list")
    assert code == 1
    assert "error 401" in output and "API key" in output


def photo_zip(path: Path, count: int = 12) -> int:
    """A zip of photo-like images (which do not compress) in two class folders: its size."""
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(count):
            image = io.BytesIO()
            photo_like(96, 96, seed=index).save(image, format="PNG")
            archive.writestr(f"{('a', 'b')[index % 2]}/{index}.png", image.getvalue())
    return path.stat().st_size


def test_an_upload_whose_connection_drops_at_90_percent_goes_on_from_there(
    server: tuple[Settings, str, str], tmp_path: Path
) -> None:
    _, url, key = server
    size = photo_zip(tmp_path / "photos.zip")
    assert size > 4 * CHUNK_BYTES
    with cutting_proxy(url, cut_after=size * 9 // 10) as proxy:
        code, output = run(proxy.url, key, "datasets", "upload", str(tmp_path / "photos.zip"))
    assert code == 0, output
    assert proxy.cuts == 1
    assert '"status": "ready"' in output and '"num_images": 12' in output
    assert re.search(r"upload [0-9a-f]{32} \(if it stops, run again with --resume", output)
    # What was stored before the cut was not sent again: at most the chunk in flight was.
    assert proxy.sent_upstream < size + CHUNK_BYTES + 20_000


def test_a_stopped_upload_resumes_from_the_bytes_the_server_has(
    server: tuple[Settings, str, str], tmp_path: Path
) -> None:
    _, url, key = server
    path = tmp_path / "photos.zip"
    size = photo_zip(path)
    payload = path.read_bytes()
    stored = size * 9 // 10
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        upload_id = http.post("/uploads", json={"size": size, "name": "resumed"}).json()["id"]
        for offset in range(0, stored, CHUNK_BYTES):
            piece = payload[offset : min(offset + CHUNK_BYTES, stored)]
            answer = http.patch(
                f"/uploads/{upload_id}", content=piece, headers={"Upload-Offset": str(offset)}
            )
            assert answer.status_code == 200, answer.text
    with cutting_proxy(url, cut_after=10 * size) as proxy:  # counts, never cuts
        code, output = run(proxy.url, key, "datasets", "upload", str(path), "--resume", upload_id)
    assert code == 0, output
    assert f'"id": "{upload_id}"' in output and '"name": "resumed"' in output
    # The last tenth, and the requests around it: not the nine tenths the server had.
    assert proxy.sent_upstream < size // 10 + 10_000


def test_resuming_with_another_file_is_refused(
    server: tuple[Settings, str, str], tmp_path: Path
) -> None:
    _, url, key = server
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        upload_id = http.post("/uploads", json={"size": 10}).json()["id"]
    photo_zip(tmp_path / "other.zip", count=2)
    code, output = run(
        url, key, "datasets", "upload", str(tmp_path / "other.zip"), "--resume", upload_id
    )
    assert code == 1
    assert f"upload {upload_id} is of 10 bytes" in output
