"""The `clipft` command as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from app.cli import app as cli_app
from app.core.embedded_redis import free_tcp_port
from tests.clipft_process import group_is_gone


def clean_environment(data_dir: Path) -> dict[str, str]:
    """A user's fresh machine: no database or broker configured, only a data dir."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLIPFT_")}
    env["CLIPFT_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_serve_runs_everything_on_the_defaults_and_stops_it_all(tmp_path: Path) -> None:
    port = free_tcp_port()
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env=clean_environment(tmp_path / "data"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve never became healthy"
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        body = health.json()
        assert {name: body[name] for name in ("status", "database", "broker")} == {
            "status": "ok",
            "database": "ok",
            "broker": "ok",
        }
        assert "worker" in body  # seen or not yet: the worker may still be starting
        assert (tmp_path / "data" / "clipft.db").is_file()
        assert httpx.get(f"http://127.0.0.1:{port}/jobs").json() == {"items": [], "total": 0}
    finally:
        serve.send_signal(signal.SIGINT)  # Ctrl-C
        serve.wait(timeout=60)
    # The worker and the embedded Redis went down with it.
    deadline = time.monotonic() + 30
    while not group_is_gone(serve.pid):
        assert time.monotonic() < deadline, "serve left processes running"
        time.sleep(0.2)


def test_worker_without_a_broker_url_says_what_to_do(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "worker"],
        env=clean_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "CLIPFT_REDIS_URL is not set" in result.stderr


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for command in ("serve", "api", "worker", "migrate", "demo"):
        result = runner.invoke(cli_app, [command, "--help"])
        assert result.exit_code == 0, result.output


@pytest.mark.usefixtures("private_metrics_dir_restored")
def test_api_processes_get_the_configured_time_to_answer_uvicorns_ping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn kills a worker process that misses its 5 s ping; one importing torch on a busy
    machine does, and the compose check's api was killed in a loop. The setting reaches it."""
    import uvicorn

    from app.core.config import get_settings

    calls: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    for name in [name for name in os.environ if name.startswith("CLIPFT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CLIPFT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CLIPFT_API_WORKERS", "2")
    monkeypatch.setenv("CLIPFT_API_WORKER_HEALTHCHECK_SECONDS", "45")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli_app, ["api", "--no-migrate", "--port", "8123"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert len(calls) == 1
    assert calls[0]["workers"] == 2
    assert calls[0]["timeout_worker_healthcheck"] == 45
