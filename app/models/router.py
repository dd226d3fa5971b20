"""`GET /models` and `GET /models/{model_id}`: the models that training has registered."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from app.auth.requests import PrincipalDep
from app.core import storage
from app.deps import LimitQuery, OffsetQuery, SessionDep, SettingsDep
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


@router.delete("/models/{model_id}", status_code=204)
def delete_model(
    model_record: ModelRecordDep, session: SessionDep, settings: SettingsDep, request: Request
) -> None:
    """Delete a model: its row and its files. Its job stays, without a model."""
    model_id = model_record.id
    service.delete_model(session=session, model_record=model_record)
    session.commit()
    model_cache = getattr(request.app.state, "model_cache", None)
    if model_cache is not None:
        model_cache.evict(model_id)
    storage.discard_dir(storage.model_dir(settings.data_dir, model_id))
