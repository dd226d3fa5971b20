"""What the dead-code check (vulture, `make lint`) cannot see used: a library calls or reads it.

Vulture reads this file as code that uses each name. Remove a line with the code it names.
"""

from app.auth.schemas import UsagePublic
from app.core.error_responses import ErrorBody
from app.datasets.schemas import UploadPublic
from app.health.metrics_router import ServiceState
from app.jobs.schemas import JobPublic
from app.ml.class_head import ClassHead
from app.models.export import _Sink
from app.orm.base import UTCDateTime
from app.orm.tables import Job, WebhookDelivery
from app.webhooks.event_types import WebhookEvent
from app.webhooks.schemas import DeliveryPublic
from worker.liveness import Liveness

_Sink.writable  # io.RawIOBase asks before writing
ServiceState.collect  # prometheus_client's registry calls it on each scrape
ClassHead.forward  # torch.nn.Module.__call__
Liveness.requires  # Celery's bootsteps order a step by it
UTCDateTime.impl  # SQLAlchemy's TypeDecorator reads these four
UTCDateTime.cache_ok
UTCDateTime.process_bind_param
UTCDateTime.process_result_value
# Written by keyword (lifecycle's UPDATE, the error body's dict) and read by pydantic.
Job.started_at
JobPublic.started_at
ErrorBody.files_checked
ErrorBody.files_refused
# Written by keyword (GET /usage) and read by pydantic.
UsagePublic.datasets_bytes
UsagePublic.models_bytes
UsagePublic.checkpoints_bytes
UsagePublic.uploads_in_progress_bytes
UsagePublic.total_bytes
UsagePublic.max_stored_bytes
# Written by keyword (the sender's fenced UPDATE) and read by pydantic (the delivery log).
WebhookDelivery.last_status_code
WebhookDelivery.last_error
WebhookDelivery.delivered_at
DeliveryPublic.last_status_code
DeliveryPublic.last_error
DeliveryPublic.delivered_at
DeliveryPublic.attempt_log
# Made from their values (`WebhookEvent(f"job.{status}")`), listed by iterating the enum.
WebhookEvent.JOB_SUCCEEDED
WebhookEvent.JOB_FAILED
WebhookEvent.JOB_CANCELLED
# Written by keyword (GET /uploads/{id}) and read by pydantic.
UploadPublic.chunk_max_bytes
