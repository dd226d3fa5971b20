"""The schema comes only from the migrations, and they match the ORM models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from app.core.migrate import alembic_config
from app.orm import Base
from tests.conftest import empty_database


@pytest.fixture
def new_database(tmp_path: Path) -> Iterator[str]:
    yield from empty_database(tmp_path / "migrations.db")


def table_names(database_url: str) -> set[str]:
    engine = sa.create_engine(database_url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_and_no_drift(new_database: str) -> None:
    config = alembic_config(new_database)
    command.upgrade(config, "head")
    assert table_names(new_database) >= set(Base.metadata.tables)
    command.downgrade(config, "base")
    assert table_names(new_database) <= {"alembic_version"}
    command.upgrade(config, "head")
    assert table_names(new_database) >= set(Base.metadata.tables)
    # Raises when the ORM models and the migrations disagree.
    command.check(config)
