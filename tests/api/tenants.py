"""Tenants for the API tests: their keys, the header that sends a key, a tenant with rows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select

from app.auth.keys import create_key
from app.core.config import Settings
from app.core.db import session_scope
from app.orm import Model
from tests.conftest import make_ready_dataset
from tests.model_factory import register_model


def new_key(settings: Settings, tenant: str, *, admin: bool = False) -> str:
    with session_scope(settings.resolved_database_url) as session:
        return create_key(session=session, name=f"test {tenant}", tenant=tenant, admin=admin).key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class TenantRows:
    tenant: str
    key: str
    dataset_id: str
    job_id: str
    model_id: str


def tenant_with_rows(settings: Settings) -> TenantRows:
    tenant = f"t{uuid.uuid4().hex[:10]}"
    model_id = register_model(settings=settings, tenant=tenant)
    with session_scope(settings.resolved_database_url) as session:
        job_id = session.scalars(select(Model.job_id).where(Model.id == model_id)).one()
    return TenantRows(
        tenant=tenant,
        key=new_key(settings, tenant),
        dataset_id=make_ready_dataset(settings, tenant=tenant),
        job_id=job_id,
        model_id=model_id,
    )
