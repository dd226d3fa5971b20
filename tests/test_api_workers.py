"""`clipft api` with several worker processes (CLIPFT_API_WORKERS): all serve, all stop."""

from __future__ import annotations

import base64
import io
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from app.core.config import Settings
from app.core.migrate import upgrade_to_head
from app.ml.synthetic import photo_like
from tests.api.predict_requests import assert_same_answer
from tests.clipft_process import group_is_gone, start_clipft, wait_until_answering
from tests.model_factory import register_model


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is `pid`, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name in parentheses may hold spaces; the parent id follows it.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid:
            found.append(int(entry.name))
    return found


def test_two_api_workers_both_serve_predictions_and_stop_with_the_api(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    settings = Settings(
        data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'clipft.db'}", redis_url=None
    )
    upgrade_to_head(settings.resolved_database_url)
    model_id = register_model(settings=settings)
    log_path = tmp_path / "api.log"
    api, base_url = start_clipft(
        "api",
        env={
            "CLIPFT_DATA_DIR": str(data_dir),
            "CLIPFT_DATABASE_URL": settings.resolved_database_url,
            "CLIPFT_API_WORKERS": "2",
            "CLIPFT_DEVICE": "cpu",
            "CLIPFT_METRICS_DIR": str(tmp_path / "local-metrics"),
        },
        log_path=log_path,
        new_session=True,
    )
    try:
        wait_until_answering(api, f"{base_url}/models/{model_id}", log_path)
        # uvicorn's supervisor runs the two workers as its children (spawned processes).
        workers = [
            pid
            for pid in children_of(api.pid)
            if b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(workers) >= 2, log_path.read_text()

        buffer = io.BytesIO()
        photo_like(96, 64, seed=1).save(buffer, format="PNG")
        body = {"model_id": model_id, "images": [base64.b64encode(buffer.getvalue()).decode()]}
        with httpx.Client(base_url=base_url, timeout=60) as client:

            def predict(_: int) -> httpx.Response:
                # A new connection each time, so the kernel spreads them over the workers.
                return client.post("/predict", json=body, headers={"connection": "close"})

            with ThreadPoolExecutor(8) as pool:
                responses = list(pool.map(predict, range(24)))
        assert {response.status_code for response in responses} == {200}
        # Every worker serves the same model the same way: the same labels, and scores equal up
        # to float rounding (a request that shared a forward pass with others went through
        # matrix products of another batch size, which round differently in the last bits).
        first = responses[0].json()["predictions"]
        for response in responses[1:]:
            assert_same_answer(response.json()["predictions"], first)
        served_by = log_path.read_text().count("POST /predict")
        assert served_by == 24
        # /metrics sums the workers' counters, whichever worker answers the scrape.
        scraped = httpx.get(f"{base_url}/metrics", timeout=10).text
        assert 'clipft_predict_seconds_count{route="predict"} 24.0' in scraped
        # The workers' pid-named files are on local disk, in a folder of this start's own,
        # never in the data dir that other machines' containers share.
        (own_dir,) = (tmp_path / "local-metrics").iterdir()
        assert any(own_dir.glob("*.db"))
        assert not [path for path in data_dir.rglob("*") if "prometheus" in path.name]
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(timeout=60)
    assert not any((tmp_path / "local-metrics").iterdir()), "the api left its metrics files"
    deadline = time.monotonic() + 30
    while not group_is_gone(api.pid):
        assert time.monotonic() < deadline, "the api left worker processes running"
        time.sleep(0.2)
