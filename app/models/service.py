"""Read trained models from the database."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.queries import get_or_404, newest_first_page
from app.orm.models import Model


def get_model(*, session: Session, model_id: str) -> Model:
    """The model row with this id, or `NotFound`."""
    return get_or_404(session, Model, model_id, "model")


def list_models(*, session: Session, limit: int, offset: int) -> tuple[list[Model], int]:
    """One page of models, newest first, and how many there are in all."""
    return newest_first_page(session, select(Model), Model, limit=limit, offset=offset)
