"""`/metrics` (Prometheus): the service's state and the api's own counters; admins only."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.embedded_redis import free_tcp_port
from app.main import create_app
from app.ml.synthetic import make_images, png_bytes
from tests.api.jobs import create_job
from tests.api.tenants import bearer, new_key
from tests.model_factory import register_model


def sample(text: str, name: str, default: float | None = None) -> float:
    """The value of one sample line, e.g. `clipft_jobs{status="queued"}`."""
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    if match is None and default is not None:
        return default  # a labelled series appears with its first observation
    assert match, f"{name} not in the metrics"
    return float(match.group(1))


def test_metrics_count_jobs_predictions_and_model_loads(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    before = client.get("/metrics")
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain")
    queued = sample(before.text, 'clipft_jobs{status="queued"}')
    create_job(client, ready_dataset)
    model_id = register_model(settings=settings)
    image = base64.b64encode(png_bytes(make_images(per_class=1)[0].image)).decode()
    for _ in range(2):
        answer = client.post("/predict", json={"model_id": model_id, "images": [image]})
        assert answer.status_code == 200
    after = client.get("/metrics").text
    assert sample(after, 'clipft_jobs{status="queued"}') == queued + 1
    assert sample(after, "clipft_queue_depth") >= 1
    predicted = sample(after, 'clipft_predict_seconds_count{route="predict"}')
    earlier = sample(before.text, 'clipft_predict_seconds_count{route="predict"}', default=0)
    assert predicted - earlier == 2
    assert sample(after, "clipft_model_cache_loads_total") >= 1
    assert sample(after, "clipft_model_cache_hits_total") >= 1
    assert sample(after, "clipft_forward_pass_images_count") >= 2


def test_metrics_need_an_admin_key_when_keys_are_on(settings: Settings) -> None:
    secured = settings.model_copy(update={"auth_disabled": False})
    with TestClient(create_app(secured, run_reconciler=False)) as secured_client:
        assert secured_client.get("/metrics").status_code == 401
        tenant_key = new_key(secured, "metrics-tenant")
        refused = secured_client.get("/metrics", headers=bearer(tenant_key))
        assert refused.status_code == 403 and "admin" in refused.json()["detail"]
        admin_key = new_key(secured, "operators", admin=True)
        assert secured_client.get("/metrics", headers=bearer(admin_key)).status_code == 200


def test_the_worker_serves_its_metrics_on_its_own_port(settings: Settings, tmp_path: Path) -> None:
    port = free_tcp_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("CLIPFT_")}
    env.update(
        CLIPFT_DATA_DIR=str(tmp_path),
        CLIPFT_REDIS_URL=str(settings.redis_url),
        CLIPFT_DATABASE_URL=settings.resolved_database_url,
        CLIPFT_TRAIN_QUEUE=f"metrics-probe-{port}",
        CLIPFT_WORKER_METRICS_PORT=str(port),
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--pool", "solo"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert worker.poll() is None, "the worker exited"
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "no metrics endpoint"
                time.sleep(0.3)
        assert response.status_code == 200
        assert "clipft_training_steps_total" in response.text
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
