"""Build the FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from app.auth.quotas import PredictRateLimiter
from app.auth.requests import KeyCache, get_principal
from app.auth.router import router as usage_router
from app.core.config import Settings, get_settings
from app.core.error_responses import error_responses
from app.core.objects.cache import open_cache
from app.core.objects.factory import open_store
from app.datasets.router import router as datasets_router
from app.datasets.upload_expiry import remove_expired_uploads
from app.datasets.uploads_router import router as uploads_router
from app.health.metrics_router import router as metrics_router
from app.health.router import router as health_router
from app.http.error_handlers import install_error_handlers
from app.jobs.reconcile import reconcile_once
from app.jobs.router import router as jobs_router
from app.models.router import router as models_router
from app.predict.model_lookup import ModelLookup
from app.predict.router import router as predict_router
from app.predict.serving import ServedModel
from app.ui import mount_dashboard
from app.webhooks.router import router as webhooks_router

logger = logging.getLogger(__name__)


async def reconcile_forever(settings: Settings) -> None:
    """Re-send lost jobs, recover jobs of dead workers and remove expired uploads, every
    `reconcile_interval_seconds`."""
    while True:
        try:
            report = await asyncio.to_thread(reconcile_once, settings)
            if report.resend or report.failed or report.cancelled:
                logger.info("reconciler: %s", report)
            if expired := await asyncio.to_thread(remove_expired_uploads, settings):
                logger.info("reconciler: removed %d expired uploads", len(expired))
        except Exception:
            logger.exception("reconciler pass failed; will try again")
        await asyncio.sleep(settings.reconcile_interval_seconds)


def create_app(settings: Settings | None = None, *, run_reconciler: bool = True) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(reconcile_forever(settings)) if run_reconciler else None
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        pixel_pool = getattr(_app.state, "pixel_pool", None)
        if pixel_pool is not None:
            pixel_pool.shutdown()

    app = FastAPI(
        title="clipft",
        version="1",
        summary="Fine-tune CLIP on your own images.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.key_cache = KeyCache()
    app.state.model_lookup = ModelLookup[ServedModel](settings.model_lookup_seconds)
    app.state.predict_rate = PredictRateLimiter()
    # Models registered on another machine are read from the object store, through this cache.
    app.state.object_store = open_store(settings)
    app.state.object_cache = open_cache(settings, app.state.object_store)

    install_error_handlers(app)

    app.include_router(health_router)
    app.include_router(metrics_router)
    # Every route but /health needs a key (when authentication is on), whether or not the
    # route itself asks who the caller is.
    authenticated = [Depends(get_principal)]
    routers_with_errors = [
        (datasets_router, error_responses(400, 401, 404, 409, 413, 422, 429, 503, 507)),
        (uploads_router, error_responses(400, 401, 404, 409, 413, 422, 429, 503, 507)),
        (jobs_router, error_responses(401, 404, 409, 422, 429, 503, 507)),
        (models_router, error_responses(401, 404, 409, 422, 503)),
        (predict_router, error_responses(400, 401, 404, 409, 413, 415, 422, 429, 503)),
        (usage_router, error_responses(401, 503)),
        (webhooks_router, error_responses(401, 404, 409, 422, 503)),
    ]
    for router, responses in routers_with_errors:
        app.include_router(router, dependencies=authenticated, responses=responses)
    mount_dashboard(app)
    return app
