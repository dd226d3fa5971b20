"""Read trained models from the database."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.orm.models import Model


def get_model(*, session: Session, model_id: str) -> Model:
    """The model row with this id, or `NotFound`."""
    model_record = session.get(Model, model_id)
    if model_record is None:
        raise NotFound(f"model {model_id} not found")
    return model_record


def list_models(*, session: Session, limit: int, offset: int) -> tuple[list[Model], int]:
    """One page of models, newest first, and how many there are in all."""
    page = session.scalars(
        select(Model).order_by(Model.created_at.desc(), Model.id.desc()).limit(limit).offset(offset)
    )
    total = session.scalar(select(func.count()).select_from(Model)) or 0
    return list(page), total
