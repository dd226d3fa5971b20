"""The embedded Redis: one per folder, nothing written to the data disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from app.core.embedded_redis import EmbeddedRedis, WorkDirInUse


def test_a_second_embedded_redis_in_the_same_folder_refuses_until_the_first_stops(
    tmp_path: Path,
) -> None:
    with EmbeddedRedis(tmp_path) as first:
        second = EmbeddedRedis(tmp_path)
        with pytest.raises(WorkDirInUse, match="another embedded redis"):
            second.start(lock_wait_seconds=0.2)
        assert redis.Redis.from_url(first.url).ping()
    with EmbeddedRedis(tmp_path) as after:
        assert redis.Redis.from_url(after.url).ping()


def test_the_embedded_broker_keeps_nothing_on_the_data_disk(tmp_path: Path) -> None:
    """A full data disk cannot turn its writes into MISCONF: it never writes there."""
    with EmbeddedRedis(tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        client.lpush("train", b"wake up")
        assert client.lrange("train", 0, -1) == [b"wake up"]
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("save") == {"save": ""}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["redis.lock", "redis.log"]
