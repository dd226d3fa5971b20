"""Everything `clipft serve` and `clipft demo` start on one machine, and stop again.

Without `CLIPFT_REDIS_URL` an embedded Redis is started; without `CLIPFT_DATABASE_URL` the
SQLite file in the data dir is used. The api and worker run as child processes that get the
resolved settings through their environment, exactly as in a deployment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx

from app.core.config import Settings
from app.core.embedded_redis import EmbeddedRedis
from app.core.migrate import upgrade_to_head


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
def broker(settings: Settings) -> Iterator[str]:
    """The configured Redis, or an embedded one for as long as the block runs."""
    if settings.redis_url:
        yield settings.redis_url
        return
    with EmbeddedRedis(settings.data_dir / "redis") as embedded:
        yield embedded.url


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def exit_on_stop_signals() -> None:
    """SIGTERM and SIGHUP end the process like Ctrl-C: by unwinding, so every child started
    under a `with` is stopped on the way out (their default action would kill us outright and
    leave the worker and Redis running)."""

    def unwind(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, unwind)


@contextlib.contextmanager
def local_stack(
    settings: Settings,
    *,
    api_port: int | None = None,
    log_dir: Path | None = None,
) -> Iterator[dict[str, str]]:
    """Start broker, migrations and a worker (and the api when `api_port` is given)."""
    exit_on_stop_signals()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(settings.resolved_database_url)
    with broker(settings) as redis_url, contextlib.ExitStack() as stack:
        env = child_environment(settings, redis_url)
        worker = start_child(clipft_command("worker"), env, log_dir, "worker")
        stack.callback(stop_process, worker)
        if api_port is not None:
            api = start_child(
                clipft_command("api", "--port", str(api_port), "--no-migrate"), env, log_dir, "api"
            )
            stack.callback(stop_process, api)
            wait_until_healthy(f"http://127.0.0.1:{api_port}", api, timeout=120)
        yield env


def start_child(
    command: list[str], env: dict[str, str], log_dir: Path | None, name: str
) -> subprocess.Popen[bytes]:
    output: IO[bytes] | None = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        output = (log_dir / f"{name}.log").open("ab")
    return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
