"""Fixtures of the webhook tests: a database of their own (so that a sender claims only their
deliveries), an api that may send to loopback, a real receiver on loopback, a hand-moved clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from app.core.config import Settings
from app.core.db import session_scope
from app.core.migrate import upgrade_to_head
from app.main import create_app
from app.orm import Webhook
from tests.conftest import empty_database
from tests.webhooks.receiver import Receiver, serve


@pytest.fixture(scope="package")
def hook_settings(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    folder: Path = tmp_path_factory.mktemp("webhooks-db")
    for database_url in empty_database(folder / "webhooks.db"):
        upgrade_to_head(database_url)
        yield settings.model_copy(
            update={
                "database_url": database_url,
                "webhook_allow_private": True,
                "webhook_sender_threads": 4,
                "webhook_timeout_seconds": 5.0,
            }
        )


@pytest.fixture(scope="package")
def hook_client(hook_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(hook_settings, run_reconciler=False)) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
def no_webhooks_left(hook_settings: Settings) -> None:
    """Each test starts with no webhooks, hence no deliveries, of an earlier one."""
    with session_scope(hook_settings.resolved_database_url) as session:
        session.execute(delete(Webhook))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    server = serve(found)
    yield found
    server.shutdown()
    server.server_close()
