"""Shared fixtures: a migrated database, a real Redis, a data dir, the app over HTTP, and a stub
/health server for the health checks, and an S3 server (SeaweedFS) for tests that ask for it.

By default the database is a SQLite file and Redis is the embedded server, as on a user's
fresh machine. CI also runs the suite against real services by setting
`CLIPFT_TEST_POSTGRES_URL` (a server URL; each run gets its own new database) and
`CLIPFT_TEST_REDIS_URL`.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from app.core.config import Settings
from app.core.embedded_redis import EmbeddedRedis
from app.core.migrate import upgrade_to_head
from app.main import create_app
from tests.object_store import SeaweedS3

# A test touches the backends when its fixtures reach the database or the broker, or when it is
# marked `backend` (it builds a database of its own); `backend_independent` marks one that does
# reach them, but whose subject (a method's maths, a browser page, a crash's message) is the
# same on every backend. CI runs the whole suite once, on the defaults, and then only the tests
# that touch the backends against PostgreSQL and Redis (`--backend-dependent-only`).
BACKEND_FIXTURES = frozenset({"database_url", "redis_url"})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend-dependent-only",
        action="store_true",
        help="run only the tests whose behaviour depends on the database or the broker",
    )


def depends_on_the_backend(item: pytest.Item) -> bool:
    if item.get_closest_marker("backend_independent"):
        return False
    fixtures = set(getattr(item, "fixturenames", ()))
    return bool(item.get_closest_marker("backend")) or bool(BACKEND_FIXTURES & fixtures)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--backend-dependent-only"):
        return
    kept = [item for item in items if depends_on_the_backend(item)]
    kept_ids = {id(item) for item in kept}
    config.hook.pytest_deselected(items=[item for item in items if id(item) not in kept_ids])
    items[:] = kept


def new_postgres_database(server_url: str) -> Iterator[str]:
    name = f"clipft_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        from app.core.db import forget_engines

        forget_engines()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def private_metrics_dir_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """For a test whose code points PROMETHEUS_MULTIPROC_DIR at a folder of its own (`clipft api`,
    `use_private_metrics_dir`): the variable is as it was afterwards, or every later test in the
    process reads its metrics from that folder. (`monkeypatch.delenv` of an unset variable
    records nothing to restore, hence the `setenv` first.)"""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", os.environ.get("PROMETHEUS_MULTIPROC_DIR", ""))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clipft-data")


def empty_database(sqlite_file: Path) -> Iterator[str]:
    """A new PostgreSQL database when CI names a server, else a SQLite file."""
    server_url = os.environ.get("CLIPFT_TEST_POSTGRES_URL")
    if server_url:
        yield from new_postgres_database(server_url)
    else:
        yield f"sqlite:///{sqlite_file}"


@pytest.fixture(scope="session")
def database_url(data_dir: Path) -> Iterator[str]:
    yield from empty_database(data_dir / "clipft.db")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("CLIPFT_TEST_REDIS_URL")
    if external:
        yield external
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(scope="session")
def migrated_database(database_url: str) -> str:
    upgrade_to_head(database_url)
    return database_url


@pytest.fixture(scope="session")
def idle_queue(redis_url: str) -> Iterator[str]:
    """A queue no worker listens on: jobs created by API tests stay `queued` there."""
    name = f"train-idle-{uuid.uuid4().hex[:8]}"
    yield name
    redis.Redis.from_url(redis_url).delete(name)


@pytest.fixture(scope="session")
def settings(data_dir: Path, migrated_database: str, redis_url: str, idle_queue: str) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=migrated_database,
        redis_url=redis_url,
        train_queue=idle_queue,
        val_fraction=0.25,
    )


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_reconciler=False)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def ready_dataset(settings: Settings) -> str:
    """A ready classification dataset of synthetic shapes, written without the upload route."""
    return make_ready_dataset(settings)


def make_ready_dataset(
    settings: Settings,
    *,
    status: str = "ready",
    per_class: int = 30,
    kind: str = "classification",
    classes: tuple[str, ...] | None = None,
    seed: int = 0,
    tenant: str = "default",
) -> str:
    from app.core.db import session_scope
    from app.core.storage import dataset_dir, new_id
    from app.datasets.service import dataset_row
    from app.ml.synthetic import DEFAULT_CLASSES
    from tests.training.synthetic_folder import write_synthetic_folder

    dataset_id = new_id()
    manifest = write_synthetic_folder(
        dataset_dir(settings.data_dir, dataset_id),
        per_class=per_class,
        kind=kind,
        classes=classes or DEFAULT_CLASSES,
        seed=seed,
    )
    with session_scope(settings.resolved_database_url) as session:
        session.add(
            dataset_row(
                dataset_id=dataset_id,
                name="synthetic shapes",
                manifest=manifest,
                status=status,
                tenant=tenant,
            )
        )
    return dataset_id


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3-compatible server, started once, the first time a test asks for it."""
    with SeaweedS3(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def s3_bucket(seaweedfs: SeaweedS3) -> str:
    return seaweedfs.new_bucket()


@pytest.fixture
def health_server() -> Iterator[tuple[int, dict[str, int]]]:
    """A local HTTP server whose /health answers with `state["status"]`."""
    state = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = state["status"] if self.path == "/health" else 404
            body = json.dumps({"status": "ok" if status == 200 else "unavailable"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
