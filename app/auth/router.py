"""`GET /usage`: what the caller's tenant keeps on the server, and its quotas."""

from __future__ import annotations

from fastapi import APIRouter

from app.auth.quotas import live_reservations_since
from app.auth.requests import PrincipalDep
from app.auth.schemas import UsagePublic
from app.auth.usage import stored_usage
from app.http.deps import SessionDep, SettingsDep

router = APIRouter(tags=["usage"])


@router.get("/usage")
def read_usage(session: SessionDep, settings: SettingsDep, principal: PrincipalDep) -> UsagePublic:
    """Show the bytes the caller's tenant stores, by kind, and the quotas that count them."""
    usage = stored_usage(
        session=session,
        tenant=principal.tenant,
        reservations_since=live_reservations_since(settings),
    )
    return UsagePublic(
        tenant=principal.tenant,
        datasets_bytes=usage.datasets,
        prepared_bytes=usage.prepared,
        models_bytes=usage.models,
        checkpoints_bytes=usage.checkpoints,
        uploads_in_progress_bytes=usage.uploads,
        total_bytes=usage.total,
        max_stored_bytes=settings.tenant_max_stored_bytes,
        max_upload_bytes=settings.tenant_max_upload_bytes,
    )
