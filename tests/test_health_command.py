"""`clipft health`: the image's one health command, for an api and for a worker."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import app as cli_app
from app.core.config import Settings, get_settings
from app.core.embedded_redis import free_tcp_port
from app.main import create_app
from tests.worker.celery_process import WorkerProcess
from tests.worker.jobs import queue_settings


@pytest.fixture
def health_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The settings `clipft health` reads: this test's liveness file, beats of 1 s."""
    alive = tmp_path / "worker.alive"
    monkeypatch.setenv("CLIPFT_WORKER_LIVENESS_FILE", str(alive))
    monkeypatch.setenv("CLIPFT_WORKER_LIVENESS_SECONDS", "1")
    get_settings.cache_clear()
    yield alive
    get_settings.cache_clear()


def test_an_api_that_does_not_answer_is_unhealthy(health_env: Path) -> None:
    url = f"http://127.0.0.1:{free_tcp_port()}/health"
    result = CliRunner().invoke(cli_app, ["health", "--url", url, "--timeout", "1"])
    assert result.exit_code == 1
    assert "api: unhealthy" in result.output


@pytest.mark.backend_independent  # the liveness file and the broker key, the same on any Redis
@pytest.mark.e2e
def test_a_worker_is_healthy_while_its_loop_beats_and_seen_by_the_api(
    settings: Settings, health_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    own = queue_settings(settings).model_copy(update={"worker_liveness_seconds": 1.0})
    monkeypatch.setenv("CLIPFT_REDIS_URL", str(own.redis_url))
    with TestClient(create_app(own, run_reconciler=False)) as client:
        assert client.get("/health").json()["worker"] == "no worker seen in the last 3s"
        worker = WorkerProcess(
            own,
            tmp_path / "worker.log",
            {"CLIPFT_WORKER_LIVENESS_FILE": str(health_env), "CLIPFT_WORKER_LIVENESS_SECONDS": "1"},
        ).start()
        try:
            deadline = time.monotonic() + 10
            while not health_env.exists():
                assert time.monotonic() < deadline, worker.log_path.read_text()
                time.sleep(0.1)
            result = CliRunner().invoke(cli_app, ["health"])
            assert (result.exit_code, result.output) == (0, "worker: ok\n")
            assert client.get("/health").json()["worker"] == "ok"
            # The file is refreshed while the loop turns.
            touched = health_env.stat().st_mtime
            while health_env.stat().st_mtime == touched:
                assert time.monotonic() < deadline + 5, "the liveness file was not touched again"
                time.sleep(0.1)
        finally:
            worker.kill()
    # A dead worker's file goes stale: three missed beats make it unhealthy.
    stale = time.time() - 10
    os.utime(health_env, (stale, stale))
    result = CliRunner().invoke(cli_app, ["health"])
    assert result.exit_code == 1
    assert "worker: unhealthy" in result.output and "silent" in result.output
