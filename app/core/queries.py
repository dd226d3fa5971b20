"""Reads every API domain shares: one row or a 404, and one page of rows, newest first.

Both take the principal asking: another tenant's row answers exactly as a missing one does, so
ids reveal nothing across tenants.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.core.principal import Principal

RowT = TypeVar("RowT")


def get_or_404(
    session: Session, row_class: type[RowT], row_id: str, noun: str, *, principal: Principal
) -> RowT:
    """The row with this primary key, or `NotFound("<noun> <id> not found")`."""
    row = session.get(row_class, row_id)
    if row is None or not principal.sees(row.tenant):  # type: ignore[attr-defined]
        raise NotFound(f"{noun} {row_id} not found")
    return row


def visible_to(query: Select[RowT], row_class: Any, principal: Principal) -> Select[RowT]:
    """`query` narrowed to the principal's tenant (admins see every tenant)."""
    return query if principal.admin else query.where(row_class.tenant == principal.tenant)


def newest_first_page(
    session: Session,
    query: Select[RowT],
    row_class: Any,
    *,
    principal: Principal,
    limit: int,
    offset: int,
) -> tuple[list[RowT], int]:
    """One page of `query`'s rows by `created_at` descending (ties by id), and the total."""
    query = visible_to(query, row_class, principal)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = session.scalars(
        query.order_by(row_class.created_at.desc(), row_class.id.desc()).limit(limit).offset(offset)
    )
    return list(page), total
