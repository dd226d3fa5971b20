"""A full disk answers 507 wherever the api writes: an upload, its images, the database."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.core.config import Settings
from app.core.db import forget_engines
from app.core.migrate import upgrade_to_head
from app.core.storage import datasets_root
from app.main import create_app
from tests.conftest import make_ready_dataset
from tests.datasets_helpers import make_zip, upload
from tests.small_filesystem import can_mount_a_small_filesystem, fill, small_filesystem

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(
        not can_mount_a_small_filesystem(), reason="needs to mount a small tmpfs (root)"
    ),
]
DISK_FULL = {"detail": "the server's disk is full; try again once space is freed"}


def noise_png() -> bytes:
    """A 128x128 PNG that does not compress: about 49 KB, in the zip and stored alike."""
    pixels = Image.frombytes("RGB", (128, 128), os.urandom(128 * 128 * 3))
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG")
    return buffer.getvalue()


# About 400 KB: it fits where the test puts it, its images once stored do not.
NOISE_ZIP = make_zip(
    [(f"{label}/{number}.png", noise_png()) for label in ("cat", "dog") for number in range(4)]
)


@pytest.mark.parametrize(
    ("size", "where"), [("640k", "storing its images"), ("128k", "receiving the zip")]
)
def test_an_upload_that_fills_the_disk_is_507_and_leaves_nothing(
    settings: Settings, tmp_path: Path, size: str, where: str
) -> None:
    with small_filesystem(tmp_path / "data", size) as data_dir:
        # The free-space floor is off: the disk fills up during the upload, `where` says how.
        full = settings.model_copy(update={"data_dir": data_dir, "min_free_disk_bytes": 0})
        with TestClient(create_app(full, run_reconciler=False)) as tight:
            datasets_before = tight.get("/datasets").json()["total"]
            response = upload(tight, NOISE_ZIP)
            assert (response.status_code, response.json()) == (507, DISK_FULL), where
            assert tight.get("/datasets").json()["total"] == datasets_before
        assert list(datasets_root(data_dir).iterdir()) == []


def test_creating_a_job_on_a_full_sqlite_disk_is_507(settings: Settings, tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "db", "2m") as db_dir:
        database_url = f"sqlite:///{db_dir / 'clipft.db'}"
        upgrade_to_head(database_url)
        on_small_disk = settings.model_copy(update={"database_url": database_url})
        dataset_id = make_ready_dataset(on_small_disk, per_class=2)
        try:
            with TestClient(create_app(on_small_disk, run_reconciler=False)) as client:
                fill(db_dir)
                response = client.post(
                    "/jobs", json={"dataset_id": dataset_id, "base_model": "tiny-clip"}
                )
                assert (response.status_code, response.json()) == (507, DISK_FULL)
                (db_dir / "filler").unlink()
                assert client.get("/jobs").json()["total"] == 0  # nothing half-recorded
        finally:
            forget_engines()
