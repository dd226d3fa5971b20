"""Reads every API domain shares: one row or a 404, and one page of rows, newest first."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.core.errors import NotFound

RowT = TypeVar("RowT")


def get_or_404(session: Session, row_class: type[RowT], row_id: str, noun: str) -> RowT:
    """The row with this primary key, or `NotFound("<noun> <id> not found")`."""
    row = session.get(row_class, row_id)
    if row is None:
        raise NotFound(f"{noun} {row_id} not found")
    return row


def newest_first_page(
    session: Session, query: Select[RowT], row_class: Any, *, limit: int, offset: int
) -> tuple[list[RowT], int]:
    """One page of `query`'s rows by `created_at` descending (ties by id), and the total."""
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = session.scalars(
        query.order_by(row_class.created_at.desc(), row_class.id.desc()).limit(limit).offset(offset)
    )
    return list(page), total
