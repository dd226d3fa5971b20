"""A broker that refuses writes for a while (MISCONF: the disk under its files is full) does not
end the worker: it reconnects until the broker takes writes again, then takes the next job."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from app.core.config import Settings
from app.core.embedded_redis import EmbeddedRedis
from app.core.queue import send_train_task
from tests.worker.celery_process import WorkerProcess
from tests.worker.jobs import queue_settings

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


def last_save_is(client: redis.Redis, status: str) -> None:
    deadline = time.monotonic() + 10
    while client.info("persistence")["rdb_last_bgsave_status"] != status:
        assert time.monotonic() < deadline, f"the snapshot never became {status}"
        time.sleep(0.05)


def test_the_worker_rides_out_a_broker_that_refuses_writes(
    settings: Settings, tmp_path: Path
) -> None:
    with EmbeddedRedis(tmp_path / "redis") as broker:
        own = queue_settings(settings).model_copy(update={"redis_url": broker.url})
        worker = WorkerProcess(own, tmp_path / "worker.log").start()
        try:
            client = redis.Redis.from_url(broker.url)
            # A snapshot that cannot be written makes Redis refuse writes, as a full disk does.
            (tmp_path / "redis" / "dump.rdb").mkdir()
            client.config_set("save", "3600 1")
            client.bgsave()
            last_save_is(client, "err")
            with pytest.raises(redis.ResponseError, match="MISCONF"):
                client.lpush("probe", "x")
            deadline = time.monotonic() + 20
            while b"MISCONF" not in worker.log_path.read_bytes():
                assert time.monotonic() < deadline, "the worker never met the refusal"
                time.sleep(0.1)

            (tmp_path / "redis" / "dump.rdb").rmdir()
            client.bgsave()
            last_save_is(client, "ok")
            send_train_task(broker_url=broker.url, queue=own.train_queue, job_id="no-such-job")
            deadline = time.monotonic() + 30
            while b"job no-such-job is not queued" not in worker.log_path.read_bytes():
                assert worker.process is not None and worker.process.poll() is None, (
                    worker.log_path.read_text()[-3000:]
                )
                assert time.monotonic() < deadline, worker.log_path.read_text()[-3000:]
                time.sleep(0.1)
        finally:
            worker.stop()
