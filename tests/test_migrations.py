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

# The migrations' SQL differs by dialect: they run on every backend.
pytestmark = pytest.mark.backend


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


def test_the_database_refuses_an_unknown_job_status(new_database: str) -> None:
    command.upgrade(alembic_config(new_database), "head")
    engine = sa.create_engine(new_database)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO dataset (id, name, status, kind, num_images, num_train, num_val,"
                    " classes, errors, created_at) VALUES ('d', 'd', 'ready', 'classification',"
                    " 0, 0, 0, '[]', '[]', CURRENT_TIMESTAMP)"
                )
            )
        insert = (
            "INSERT INTO job (id, name, status, dataset_id, base_model, hyperparameters,"
            " progress, metrics, cancel_requested, attempt, max_attempts, created_at)"
            " VALUES (:id, 'j', :status, 'd', 'tiny-clip', '{}', '{}', '{}', false, 0, 3,"
            " CURRENT_TIMESTAMP)"
        )
        with engine.begin() as connection:
            connection.execute(sa.text(insert), {"id": "ok", "status": "queued"})
        with (
            pytest.raises(sa.exc.IntegrityError, match="ck_job_status"),
            engine.begin() as connection,
        ):
            connection.execute(sa.text(insert), {"id": "bad", "status": "paused"})
    finally:
        engine.dispose()
