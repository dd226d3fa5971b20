"""`CLIPFT_STORAGE_URL` picks the backend: a folder by default, a bucket when it says s3://."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import Settings
from app.core.objects.factory import open_store
from app.core.objects.local import LocalObjectStore
from app.core.objects.s3 import S3ObjectStore


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
