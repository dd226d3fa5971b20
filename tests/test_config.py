from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.config import Settings


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
