from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import Settings
from app.core.metrics_dir import use_private_metrics_dir


def test_dev_defaults_use_sqlite_in_the_data_dir() -> None:
    settings = Settings(data_dir="some/dir", database_url=None, redis_url=None)
    assert settings.resolved_database_url.startswith("sqlite:///")
    assert settings.resolved_database_url.endswith("some/dir/clipft.db")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"database_url": None, "redis_url": "redis://r:6379/0"}, "CLIPFT_DATABASE_URL"),
        ({"database_url": "sqlite:///x.db", "redis_url": "redis://r:6379/0"}, "PostgreSQL"),
        ({"database_url": "postgresql+psycopg://u@h/db", "redis_url": None}, "CLIPFT_REDIS_URL"),
    ],
)
def test_production_refuses_the_single_machine_defaults(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(environment="production", **overrides)


def test_production_accepts_postgres_and_redis() -> None:
    settings = Settings(
        environment="production",
        database_url="postgresql+psycopg://u@h/db",
        redis_url="redis://r:6379/0",
    )
    assert settings.resolved_database_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize("inside", ["", "metrics", "sub/metrics"])
def test_metrics_dir_is_refused_inside_the_shared_data_dir(tmp_path: Path, inside: str) -> None:
    with pytest.raises(ValidationError, match="CLIPFT_METRICS_DIR"):
        Settings(data_dir=tmp_path / "data", metrics_dir=tmp_path / "data" / inside)


@pytest.mark.usefixtures("private_metrics_dir_restored")
def test_each_start_gets_its_own_metrics_dir_and_keeps_the_others_files(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", metrics_dir=tmp_path / "local")
    first = use_private_metrics_dir(settings=settings, role="api")
    (first / "counter_7.db").write_bytes(b"first start's counters")
    second = use_private_metrics_dir(settings=settings, role="api")

    assert second != first
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(second)
    assert second.parent == first.parent == tmp_path / "local"
    assert (first / "counter_7.db").read_bytes() == b"first start's counters"
    assert not (tmp_path / "data").exists()


@pytest.mark.usefixtures("private_metrics_dir_restored")
def test_metrics_dir_defaults_to_the_system_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    (tmp_path / "tmp").mkdir()
    metrics_dir = use_private_metrics_dir(
        settings=Settings(data_dir=tmp_path / "data"), role="worker"
    )
    assert metrics_dir.parent == tmp_path / "tmp"
    assert metrics_dir.name.startswith("clipft-worker-metrics-")
