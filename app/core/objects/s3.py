"""The S3 backend: objects in a bucket of any S3-compatible server, through boto3.

boto3 (with botocore and s3transfer) is AWS's own client: synchronous like the rest of the
worker and the model loading, multipart uploads and downloads for big files, and retries with
backoff for throttling and dropped connections. clipft records each object's SHA-256 as object
metadata (`x-amz-meta-sha256`) when it writes it, since an ETag is an MD5 only for single-part
uploads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from app.core.objects.store import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStoreError,
    StoreUnavailable,
    sha256_of_file,
    validate_key,
    validate_prefix,
)

SHA256_METADATA = "sha256"
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
# Files above this go up and down in parts, several at a time.
_TRANSFER = TransferConfig(multipart_threshold=64 * 1024**2, multipart_chunksize=64 * 1024**2)
_DELETE_BATCH = 1000


def s3_client(
    *,
    endpoint_url: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    region: str | None,
) -> Any:
    """A boto3 S3 client; unset credentials fall back to boto3's own chain (environment, IAM role).
    A custom endpoint (SeaweedFS, MinIO) gets path-style addressing, which they all serve."""
    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 5, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint_url else {},
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        region_name=region or "us-east-1",
        config=config,
    )


class S3ObjectStore:
    """Objects under `prefix` in `bucket`; a key `a/b` is the object `<prefix>a/b`."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _name(self, key: str) -> str:
        return self.prefix + validate_key(key)

    @contextlib.contextmanager
    def _answers(self, key: str) -> Iterator[None]:
        """The client's failures as the seam's errors."""
        try:
            yield
        except botocore.exceptions.ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND_CODES:
                raise ObjectNotFound(key) from None
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if isinstance(status, int) and status >= 500:
                # The server is there but cannot serve (a gateway whose filer restarts): like
                # no answer, it passes, and boto3 has already retried it.
                raise StoreUnavailable(f"{self.location}: {code or status}") from error
            raise ObjectStoreError(f"{self.location}: {code or error}") from error
        except (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectionClosedError,
            botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.ReadTimeoutError,
        ) as error:
            raise StoreUnavailable(f"{self.location} does not answer: {error}") from error

    def ensure_bucket(self) -> bool:
        """Create the bucket if the server has none of that name; True if it was created."""
        with self._answers(""):
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return False
            except botocore.exceptions.ClientError as error:
                code = str(error.response.get("Error", {}).get("Code", ""))
                if code not in _NOT_FOUND_CODES | {"NoSuchBucket"}:
                    raise
            self.client.create_bucket(Bucket=self.bucket)
        return True

    def put_bytes(self, key: str, payload: bytes) -> ObjectInfo:
        sha256 = hashlib.sha256(payload).hexdigest()
        with self._answers(key):
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._name(key),
                Body=payload,
                Metadata={SHA256_METADATA: sha256},
            )
        return ObjectInfo(key, len(payload), sha256)

    def put_file(self, key: str, source: Path) -> ObjectInfo:
        name = self._name(key)
        sha256 = sha256_of_file(source)
        size = source.stat().st_size
        with self._answers(key):
            self.client.upload_file(
                str(source),
                self.bucket,
                name,
                ExtraArgs={"Metadata": {SHA256_METADATA: sha256}},
                Config=_TRANSFER,
            )
        return ObjectInfo(key, size, sha256)

    def get_bytes(self, key: str) -> bytes:
        with self._answers(key):
            answer = self.client.get_object(Bucket=self.bucket, Key=self._name(key))
            return bytes(answer["Body"].read())

    def download_to(self, key: str, target: Path) -> ObjectInfo:
        name = self._name(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        os.close(fd)
        try:
            with self._answers(key):
                self.client.download_file(self.bucket, name, tmp_name, Config=_TRANSFER)
            info = ObjectInfo(key, os.stat(tmp_name).st_size, sha256_of_file(Path(tmp_name)))
            os.replace(tmp_name, target)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
        return info

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def stat(self, key: str) -> ObjectInfo:
        with self._answers(key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        metadata = {name.lower(): value for name, value in head.get("Metadata", {}).items()}
        return ObjectInfo(key, int(head["ContentLength"]), metadata.get(SHA256_METADATA))

    def _names(self, prefix: str) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        with self._answers(prefix):
            for page in pages:
                for entry in page.get("Contents", ()):
                    yield entry["Key"]

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        return sorted(name.removeprefix(self.prefix) for name in self._names(prefix))

    def delete(self, key: str) -> None:
        with self._answers(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix, folder=True)
        names = list(self._names(prefix))
        for start in range(0, len(names), _DELETE_BATCH):
            batch = names[start : start + _DELETE_BATCH]
            with self._answers(prefix):
                answer = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": name} for name in batch], "Quiet": True},
                )
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise ObjectStoreError(
                    f"{self.location}: could not delete {first.get('Key')}: {first.get('Code')}"
                )
        return len(names)
