"""The database engine and session factory, shared by the api and the worker."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Update, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import PoolLimits


def make_engine(database_url: str, pool: PoolLimits = PoolLimits()) -> Engine:
    pool_options: dict[str, Any] = {
        "pool_size": pool.size,
        "max_overflow": pool.max_overflow,
        "pool_timeout": pool.timeout_seconds,
    }
    if database_url.startswith("sqlite"):
        engine = create_engine(
            database_url,
            connect_args={"check_same_thread": False, "timeout": 30},
            **pool_options,
        )
        event.listen(engine, "connect", _configure_sqlite)
        return engine
    return create_engine(database_url, pool_pre_ping=True, **pool_options)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the api read while the worker writes progress; foreign keys are off by default.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def get_engine(database_url: str, pool: PoolLimits = PoolLimits()) -> Engine:
    """One engine (and connection pool) per database and pool size in this process."""
    # Both passed explicitly: lru_cache keys `f(url)` and `f(url, default)` apart.
    return _cached_engine(database_url, pool)


@lru_cache(maxsize=8)
def _cached_engine(database_url: str, pool: PoolLimits) -> Engine:
    return make_engine(database_url, pool)


def forget_engines() -> None:
    """Drop the cached engines and their session factories (tests do, before they drop a
    database)."""
    _cached_sessionmaker.cache_clear()
    _cached_engine.cache_clear()


def get_sessionmaker(database_url: str, pool: PoolLimits = PoolLimits()) -> sessionmaker[Session]:
    """One session factory per engine in this process."""
    return _cached_sessionmaker(database_url, pool)


@lru_cache(maxsize=8)
def _cached_sessionmaker(database_url: str, pool: PoolLimits) -> sessionmaker[Session]:
    # Kept, not made per session: each sessionmaker() makes a new Session subclass, whose event
    # registry costs more than the query it serves (/predict's model lookup, profiled: about 3%
    # of the api's GIL at 32 clients).
    return sessionmaker(bind=get_engine(database_url, pool), expire_on_commit=False)


@contextmanager
def session_scope(database_url: str, pool: PoolLimits = PoolLimits()) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back when it raises."""
    with get_sessionmaker(database_url, pool)() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def rows_updated(session: Session, statement: Update) -> int:
    """Execute a conditional UPDATE and say how many rows it changed (0 means it lost a race)."""
    result = session.execute(statement)
    return int(cast(CursorResult[Any], result).rowcount)
