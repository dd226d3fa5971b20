"""`CLIPFT_STORAGE_URL` picks the backend: a folder by default, a bucket when it says s3://."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import Settings
from app.core.objects.factory import open_store
from app.core.objects.local import LocalObjectStore
from app.core.objects.s3 import S3ObjectStore
from tests.object_store import SeaweedS3


def test_unset_means_a_folder_in_the_data_dir(tmp_path: Path) -> None:
    store = open_store(Settings(data_dir=tmp_path))
    assert isinstance(store, LocalObjectStore)
    assert store.root == (tmp_path / "objects").resolve()
    store.put_bytes("a/b", b".")
    assert (tmp_path / "objects" / "a" / "b").read_bytes() == b"."


def test_a_file_url_names_the_folder(tmp_path: Path) -> None:
    store = open_store(Settings(data_dir=tmp_path / "data", storage_url=(tmp_path / "s").as_uri()))
    assert isinstance(store, LocalObjectStore)
    assert store.location == (tmp_path / "s").resolve().as_uri()


def test_an_s3_url_names_the_bucket_and_prefix() -> None:
    store = open_store(
        Settings(
            storage_url="s3://clipft-artefacts/team/a/",
            s3_endpoint_url="http://127.0.0.1:1",
            s3_access_key_id="id",
            s3_secret_access_key="secret",
        )
    )
    assert isinstance(store, S3ObjectStore)
    assert (store.bucket, store.prefix) == ("clipft-artefacts", "team/a/")
    assert store.location == "s3://clipft-artefacts/team/a/"
    assert store.client.meta.endpoint_url == "http://127.0.0.1:1"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/x", "use s3://bucket/prefix"),
        ("s3://Bad_Bucket/x", "not a bucket name"),
        ("s3:///x", "not a bucket name"),
        ("s3://bucket/a/../b", "`..`"),
        ("file://host/folder", "absolute folder"),
    ],
)
def test_a_url_naming_no_backend_is_refused_at_start(url: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(storage_url=url)


def test_the_secret_key_is_not_shown() -> None:
    settings = Settings(
        storage_url="s3://bucket/x", s3_access_key_id="id", s3_secret_access_key="hunter2"
    )
    assert "hunter2" not in repr(settings)


def test_half_a_key_pair_is_refused() -> None:
    with pytest.raises(ValidationError, match="CLIPFT_S3_SECRET_ACCESS_KEY"):
        Settings(storage_url="s3://bucket/x", s3_access_key_id="id")


def test_empty_settings_mean_unset_as_compose_passes_them(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        storage_url="",
        s3_endpoint_url="",
        s3_access_key_id="",
        s3_secret_access_key="",
    )
    assert settings.storage_url is None and settings.s3_access_key_id is None
    assert isinstance(open_store(settings), LocalObjectStore)


def test_create_bucket_makes_the_configured_bucket_once(
    seaweedfs: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from app.cli import app
    from app.core.config import get_settings

    bucket = f"clipft-new-{uuid.uuid4().hex[:8]}"
    configured = seaweedfs.settings(f"s3://{bucket}/artefacts")
    for name in ("storage_url", "s3_endpoint_url", "s3_access_key_id"):
        monkeypatch.setenv(f"CLIPFT_{name.upper()}", str(getattr(configured, name)))
    assert configured.s3_secret_access_key is not None
    monkeypatch.setenv(
        "CLIPFT_S3_SECRET_ACCESS_KEY", configured.s3_secret_access_key.get_secret_value()
    )
    get_settings.cache_clear()
    try:
        first = CliRunner().invoke(app, ["create-bucket"])
        second = CliRunner().invoke(app, ["create-bucket"])
    finally:
        get_settings.cache_clear()
    assert first.exit_code == 0, first.output
    assert first.output.strip() == f"bucket {bucket} created"
    assert second.output.strip() == f"bucket {bucket} already exists"
    store = open_store(configured)
    store.put_bytes("a", b"x")
    assert store.get_bytes("a") == b"x"
