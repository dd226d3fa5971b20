"""Start and stop a real `clipft worker` process for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.core.config import Settings


def is_running(pid: int) -> bool:
    """Whether the process exists and is not a zombie waiting for a parent that died."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until_gone(pid: int, timeout_seconds: float = 10.0) -> bool:
    """Whether the process is gone within the timeout (a killed one takes a moment to die)."""
    deadline = time.monotonic() + timeout_seconds
    while is_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def storage_environment(settings: Settings) -> dict[str, str]:
    """The object store settings as a process's environment: those that are set."""
    secret = settings.s3_secret_access_key
    values = {
        "CLIPFT_STORAGE_URL": settings.storage_url,
        "CLIPFT_S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "CLIPFT_S3_ACCESS_KEY_ID": settings.s3_access_key_id,
        "CLIPFT_S3_SECRET_ACCESS_KEY": secret.get_secret_value() if secret else None,
    }
    return {name: value for name, value in values.items() if value is not None}


class WorkerProcess:
    def __init__(
        self, settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_seconds: float = 90.0) -> WorkerProcess:
        env = dict(os.environ)
        env.update(
            CLIPFT_DATA_DIR=str(self.settings.data_dir),
            CLIPFT_DATABASE_URL=self.settings.resolved_database_url,
            CLIPFT_REDIS_URL=str(self.settings.redis_url),
            CLIPFT_TRAIN_QUEUE=self.settings.train_queue,
            CLIPFT_DEVICE="cpu",
            # No network here: hub lookups must fail at once instead of retrying.
            HF_HUB_OFFLINE="1",
            PYTHONUNBUFFERED="1",
        )
        env.update(storage_environment(self.settings))
        env.update(self.extra_env)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--loglevel=info"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a kill reaches the pool child
        )
        deadline = time.monotonic() + timeout_seconds
        while b" ready." not in self.log_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.log_path.read_text()}")
            time.sleep(0.2)
        return self

    def kill(self) -> None:
        """SIGKILL the whole worker, as an OOM killer or a lost machine would."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
