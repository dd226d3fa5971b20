"""Read trained models from the database."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.core.principal import Principal
from app.core.queries import get_or_404, newest_first_page, visible_to
from app.orm.tables import Job, Model


def get_model(*, session: Session, model_id: str, principal: Principal) -> Model:
    """The model row with this id, or `NotFound`."""
    return get_or_404(session, Model, model_id, "model", principal=principal)


def get_models(*, session: Session, model_ids: Sequence[str], principal: Principal) -> list[Model]:
    """The model rows with these ids, in the same order, or `NotFound` naming every unknown id."""
    query = visible_to(select(Model).where(Model.id.in_(model_ids)), Model, principal)
    found = {model_record.id: model_record for model_record in session.scalars(query)}
    unknown = [model_id for model_id in model_ids if model_id not in found]
    if len(unknown) == 1:
        raise NotFound(f"model {unknown[0]} not found")
    if unknown:
        raise NotFound(f"models {', '.join(unknown)} not found")
    return [found[model_id] for model_id in model_ids]


def list_models(
    *, session: Session, principal: Principal, limit: int, offset: int
) -> tuple[list[Model], int]:
    """One page of models, newest first, and how many there are in all."""
    return newest_first_page(
        session, select(Model), Model, principal=principal, limit=limit, offset=offset
    )


def delete_model(*, session: Session, model_record: Model) -> None:
    """Remove the model's row (its job keeps its history); the caller commits, then removes
    the folder."""
    session.execute(update(Job).where(Job.model_id == model_record.id).values(model_id=None))
    session.delete(model_record)
    session.flush()
