"""Everything `clipft serve` and `clipft demo` start on one machine, and stop again.

Without `CLIPFT_REDIS_URL` an embedded Redis is started; without `CLIPFT_DATABASE_URL` the
SQLite file in the data dir is used. The api and worker run as child processes that get the
resolved settings through their environment, exactly as in a deployment. A worker or embedded
Redis that dies is started again (app/child_watch.py); every child gets SIGTERM when this
process dies, even by SIGKILL (Linux).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx

from app.child_watch import Child, ChildWatcher, RestartPolicy
from app.core.child_process import parent_death_signal
from app.core.config import Settings
from app.core.embedded_redis import EmbeddedRedis
from app.core.migrate import upgrade_to_head

# The exit status of a stack that gave up on a child that kept dying.
GAVE_UP_EXIT_CODE = 1
gave_up = threading.Event()


def child_environment(settings: Settings, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["CLIPFT_DATA_DIR"] = str(settings.data_dir.resolve())
    env["CLIPFT_DATABASE_URL"] = settings.resolved_database_url
    env["CLIPFT_REDIS_URL"] = redis_url
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def clipft_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *arguments]


def stop_process(process: subprocess.Popen[bytes], timeout_seconds: float = 20.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until_healthy(base_url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the api exited with code {process.returncode} while starting")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"the api at {base_url} did not become healthy within {timeout:.0f}s")


@contextlib.contextmanager
def broker(settings: Settings) -> Iterator[tuple[str, EmbeddedRedis | None]]:
    """The configured Redis, or an embedded one for as long as the block runs."""
    if settings.redis_url:
        yield settings.redis_url, None
        return
    with EmbeddedRedis(settings.data_dir / "redis") as embedded:
        yield embedded.url, embedded


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def exit_on_stop_signals() -> None:
    """SIGTERM and SIGHUP end the process like Ctrl-C: by unwinding, so every child started
    under a `with` is stopped on the way out (their default action would kill us outright and
    leave the worker and Redis running)."""

    def unwind(signum: int, _frame: object) -> None:
        raise SystemExit(GAVE_UP_EXIT_CODE if gave_up.is_set() else 128 + signum)

    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, unwind)


def give_up(reason: str) -> None:
    """End the whole stack, as SIGTERM would, but with a failing exit status."""
    gave_up.set()
    os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def local_stack(
    settings: Settings,
    *,
    api_port: int | None = None,
    log_dir: Path | None = None,
) -> Iterator[dict[str, str]]:
    """Start broker, migrations, a worker and the webhook sender (and the api when `api_port`
    is given)."""
    exit_on_stop_signals()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(settings.resolved_database_url)
    with broker(settings) as (redis_url, embedded), contextlib.ExitStack() as stack:
        env = child_environment(settings, redis_url)
        worker = ChildProcess("worker", clipft_command("worker"), env, log_dir).start()
        stack.callback(worker.stop)
        # The webhook sender: its own process, so that no receiver can slow a job.
        sender = ChildProcess("webhooks", clipft_command("webhooks"), env, log_dir).start()
        stack.callback(sender.stop)
        if api_port is not None:
            command = clipft_command("api", "--port", str(api_port), "--no-migrate")
            api = ChildProcess("api", command, env, log_dir).start()
            stack.callback(api.stop)
            assert api.process is not None
            wait_until_healthy(f"http://127.0.0.1:{api_port}", api.process, timeout=120)
        watched: list[Child] = [worker, sender] if embedded is None else [embedded, worker, sender]
        policy = RestartPolicy(
            first_delay_seconds=settings.serve_restart_delay_seconds,
            limit=settings.serve_restart_limit,
            window_seconds=settings.serve_restart_window_seconds,
        )
        stack.callback(ChildWatcher(watched, policy, on_give_up=give_up).start().stop)
        yield env


class ChildProcess:
    """A `clipft` child process that can be started again after it died."""

    def __init__(
        self, name: str, command: list[str], env: dict[str, str], log_dir: Path | None
    ) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ChildProcess:
        output: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = (self.log_dir / f"{self.name}.log").open("ab")
        try:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=parent_death_signal(),
            )
        finally:
            if output is not None:
                output.close()  # the child holds its own copy
        return self

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
