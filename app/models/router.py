"""`GET /models` and `GET /models/{model_id}`: the models that training has registered."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.auth.requests import PrincipalDep
from app.deps import LimitQuery, OffsetQuery, SessionDep
from app.models import service
from app.models.schemas import ModelList, ModelPublic
from app.orm.models import Model

router = APIRouter(tags=["models"])


def get_model_record(model_id: str, session: SessionDep, principal: PrincipalDep) -> Model:
    """The model named by the `model_id` path parameter; 404 when there is none."""
    return service.get_model(session=session, model_id=model_id, principal=principal)


ModelRecordDep = Annotated[Model, Depends(get_model_record)]


@router.get("/models")
def list_models(
    session: SessionDep,
    principal: PrincipalDep,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> ModelList:
    """List trained models, newest first."""
    model_records, total = service.list_models(
        session=session, principal=principal, limit=limit, offset=offset
    )
    return ModelList(
        items=[ModelPublic.model_validate(record) for record in model_records], total=total
    )


@router.get("/models/{model_id}")
def read_model(model_record: ModelRecordDep) -> ModelPublic:
    """Show one trained model: its labels, prompt template and validation metrics."""
    return ModelPublic.model_validate(model_record)
