"""The store the settings name: one place that knows which backends exist."""

from __future__ import annotations

from app.core.config import Settings
from app.core.objects.local import LocalObjectStore
from app.core.objects.location import LocalLocation, parse_storage_url
from app.core.objects.store import ObjectStore


def open_store(settings: Settings) -> ObjectStore:
    """The backend of `CLIPFT_STORAGE_URL` (unset: a local folder in the data dir)."""
    location = parse_storage_url(settings.storage_url, data_dir=settings.data_dir)
    if isinstance(location, LocalLocation):
        return LocalObjectStore(location.root)
    # boto3 is imported only by processes that use a bucket.
    from app.core.objects.s3 import S3ObjectStore, s3_client

    secret = settings.s3_secret_access_key
    client = s3_client(
        endpoint_url=settings.s3_endpoint_url,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=secret.get_secret_value() if secret else None,
        region=settings.s3_region,
    )
    return S3ObjectStore(client, location.bucket, location.prefix)


def stores_remotely(settings: Settings) -> bool:
    """Whether artefacts live outside the data dir (a bucket): the data dir then holds copies."""
    location = parse_storage_url(settings.storage_url, data_dir=settings.data_dir)
    return not isinstance(location, LocalLocation)
