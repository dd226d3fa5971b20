"""Resumable uploads nothing will finish: removed once they took no chunk for
`upload_expiry_seconds` (and completed ones, whose answer a client had that long to read).

It runs with the reconciler; each pass is idempotent, so several api replicas may run it.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta

from app.core.config import Settings
from app.core.db import session_scope
from app.core.objects.factory import open_store
from app.core.objects.store import ObjectStoreError
from app.datasets import resumable
from app.orm.base import utcnow

logger = logging.getLogger(__name__)


def remove_expired_uploads(settings: Settings, now: datetime | None = None) -> list[str]:
    """Remove every expired upload: its chunks in the object store first, then its rows, its
    quota reservation and what this host staged of it. The ids removed."""
    cutoff = (now or utcnow()) - timedelta(seconds=settings.upload_expiry_seconds)
    removed: list[str] = []
    with session_scope(settings.resolved_database_url, settings.database_pool) as session:
        expired = resumable.idle_since(session, cutoff)
        if not expired:
            return removed
        store = open_store(settings)
        for upload_id in expired:
            try:
                # Chunks first: a row stays until nothing of its upload is left in the store.
                resumable.remove(session=session, store=store, upload_id=upload_id)
            except ObjectStoreError as error:
                logger.warning(
                    "upload %s: its chunks stay in the store for now: %s", upload_id, error
                )
                continue  # the next pass tries again
            shutil.rmtree(resumable.staging_dir(settings.data_dir, upload_id), ignore_errors=True)
            removed.append(upload_id)
    return removed
