"""FastAPI dependencies shared by every router: settings and the request's database session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import session_scope


async def get_app_settings(request: Request) -> Settings:
    # Async on purpose: FastAPI runs a plain `def` dependency in a worker thread, a hop there and
    # back for every request (about 7% of the api's GIL under /predict load with the other).
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_db(settings: SettingsDep) -> Iterator[Session]:
    """A session that commits when the route succeeds and rolls back when it raises."""
    with session_scope(settings.resolved_database_url, settings.database_pool) as session:
        yield session


# scope="function": commit when the route returns, before the response is sent. With the default
# ("request") FastAPI commits after sending, so a client acting at once on a 201 could find
# the row missing (the demo did, uploading a dataset and then starting a job on it).
SessionDep = Annotated[Session, Depends(get_db, scope="function")]

# Paging of every list route: one bound for all of them.
LimitQuery = Annotated[int, Query(ge=1, le=200, description="Items per page.")]
# The databases' OFFSET is a signed 64-bit integer.
OffsetQuery = Annotated[int, Query(ge=0, le=2**63 - 1, description="Items to skip.")]
