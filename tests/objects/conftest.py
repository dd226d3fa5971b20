"""`store`: each test of the seam runs once on a local folder and once on a real S3 server."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from app.core.config import Settings
from app.core.objects.factory import open_store
from app.core.objects.s3 import S3ObjectStore
from app.core.objects.store import ObjectStore
from tests.object_store import SeaweedS3


@pytest.fixture(scope="session")
def s3_client(seaweedfs: SeaweedS3, s3_bucket: str) -> Any:
    """One client for every S3 test (making a boto3 client costs about a second on two cores),
    made by the factory from the settings."""
    store = open_store(seaweedfs.settings(f"s3://{s3_bucket}/unused"))
    assert isinstance(store, S3ObjectStore)
    return store.client


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """An empty store: a folder of its own, or a prefix of its own in the session's bucket."""
    if request.param == "local":
        return open_store(Settings(data_dir=tmp_path / "data"))
    client = request.getfixturevalue("s3_client")
    bucket = request.getfixturevalue("s3_bucket")
    return S3ObjectStore(client, bucket, f"test-{uuid.uuid4().hex[:8]}")
