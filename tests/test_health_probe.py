"""The one health probe behind the image's HEALTHCHECK and `clipft health`: what it calls
healthy, and that the container's check stays on the standard library."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from app.core.config import Settings
from app.core.embedded_redis import free_tcp_port
from app.health.probe import ProbeSettings, probe
from tests.imported_modules import heavy_modules_imported

ROOT = Path(__file__).resolve().parents[1]
HEALTHCHECK_SCRIPT = ROOT / "deploy" / "healthcheck.py"
BEAT_SECONDS = 1.0


def beating(path: Path, *, seconds_ago: float = 0.0) -> Path:
    """A liveness file last touched `seconds_ago`."""
    path.touch()
    when = time.time() - seconds_ago
    os.utime(path, (when, when))
    return path


def worker_settings(liveness_file: Path, redis_url: str | None) -> ProbeSettings:
    return ProbeSettings(
        liveness_file=liveness_file, beat_seconds=BEAT_SECONDS, redis_url=redis_url
    )


def closed_url(scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{free_tcp_port()}"


# The api.


def test_an_api_is_healthy_on_200_and_unhealthy_on_503_or_when_nothing_answers(
    health_server: tuple[int, dict[str, int]], tmp_path: Path
) -> None:
    port, state = health_server
    # No liveness file here: `auto` checks the api, on CLIPFT_HEALTHCHECK_PORT.
    settings = ProbeSettings.from_environment(
        {
            "CLIPFT_WORKER_LIVENESS_FILE": str(tmp_path / "absent.alive"),
            "CLIPFT_HEALTHCHECK_PORT": str(port),
        }
    )

    assert probe(settings).line == "api: ok"
    state["status"] = 503
    down = probe(settings)
    assert down.exit_code == 1
    assert down.line.startswith(f"api: unhealthy: the api at http://127.0.0.1:{port}/health")
    assert "answers 503" in down.line
    gone = probe(settings, url=f"{closed_url()}/health", timeout_seconds=1)
    assert gone.exit_code == 1 and "does not answer" in gone.line


# The worker: its consumer loop's liveness file, then its broker.


def test_a_beating_worker_whose_broker_answers_is_healthy(tmp_path: Path, redis_url: str) -> None:
    alive = beating(tmp_path / "worker.alive")
    verdict = probe(worker_settings(alive, redis_url))
    assert (verdict.line, verdict.exit_code) == ("worker: ok", 0)


def test_a_worker_silent_for_three_beats_is_unhealthy_whatever_its_broker(
    tmp_path: Path, redis_url: str
) -> None:
    alive = beating(tmp_path / "worker.alive", seconds_ago=3 * BEAT_SECONDS + 5)
    verdict = probe(worker_settings(alive, redis_url))
    assert verdict.exit_code == 1
    assert verdict.line.startswith("worker: unhealthy: the worker's consumer loop has been silent")
    # Two beats late is still alive.
    beating(alive, seconds_ago=2 * BEAT_SECONDS)
    assert probe(worker_settings(alive, redis_url)).exit_code == 0


def test_a_worker_that_never_started_is_unhealthy(tmp_path: Path, redis_url: str) -> None:
    verdict = probe(worker_settings(tmp_path / "never.alive", redis_url), role="worker")
    assert verdict.exit_code == 1
    assert "no worker has started here" in verdict.line


def test_a_worker_whose_broker_does_not_answer_or_refuses_it_is_unhealthy(
    tmp_path: Path, redis_url: str
) -> None:
    alive = beating(tmp_path / "worker.alive")
    down = probe(worker_settings(alive, f"{closed_url('redis')}/0"), timeout_seconds=1)
    assert down.exit_code == 1 and "the broker does not answer" in down.line
    # A password the broker does not take: its error is the reason.
    broker = urlsplit(redis_url)
    with_password = broker._replace(netloc=f":not-the-password@{broker.netloc.split('@')[-1]}")
    refused = probe(worker_settings(alive, urlunsplit(with_password)))
    assert refused.exit_code == 1 and "the broker refuses AUTH" in refused.line
    unset = probe(worker_settings(alive, None))
    assert unset.exit_code == 1 and "CLIPFT_REDIS_URL is not set" in unset.line


# The settings it reads without pydantic, and the image's check.


def test_the_probe_reads_the_same_settings_as_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CLIPFT_WORKER_LIVENESS_FILE", "CLIPFT_WORKER_LIVENESS_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    defaults, probe_defaults = Settings(), ProbeSettings.from_environment({})
    assert probe_defaults.liveness_file == defaults.worker_liveness_file
    assert probe_defaults.beat_seconds == defaults.worker_liveness_seconds

    environ = {
        "CLIPFT_WORKER_LIVENESS_FILE": str(tmp_path / "w.alive"),
        "CLIPFT_WORKER_LIVENESS_SECONDS": "2.5",
        "CLIPFT_REDIS_URL": "redis://broker:6379/3",
    }
    monkeypatch.setattr(os, "environ", {**os.environ, **environ})
    settings, probe_settings = Settings(), ProbeSettings.from_environment()
    assert probe_settings.liveness_file == settings.worker_liveness_file
    assert probe_settings.beat_seconds == settings.worker_liveness_seconds
    assert probe_settings.redis_url == settings.redis_url


def run_image_check(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **environ},
    )


def test_the_image_check_tells_a_worker_container_by_its_liveness_file(
    tmp_path: Path, redis_url: str
) -> None:
    alive = beating(tmp_path / "worker.alive")
    environ = {
        "CLIPFT_WORKER_LIVENESS_FILE": str(alive),
        "CLIPFT_WORKER_LIVENESS_SECONDS": str(BEAT_SECONDS),
        "CLIPFT_REDIS_URL": redis_url,
    }
    healthy = run_image_check(environ)
    assert (healthy.returncode, healthy.stdout) == (0, "worker: ok\n"), healthy.stderr
    beating(alive, seconds_ago=60)
    stale = run_image_check(environ)
    assert stale.returncode == 1
    assert stale.stdout.startswith("worker: unhealthy: the worker's consumer loop has been silent")


def test_the_image_check_imports_the_standard_library_only() -> None:
    # What the check would pay for on every run if the probe reached for them.
    heavy = ["torch", "pydantic", "pydantic_settings", "httpx", "redis", "celery", "fastapi"]
    assert heavy_modules_imported(["app.health.probe"], heavy) == []
