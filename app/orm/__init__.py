from app.orm.base import Base
from app.orm.tables import (
    ApiKey,
    Checkpoint,
    Dataset,
    Job,
    JobEvent,
    Model,
    Upload,
    UploadPart,
    UploadReservation,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)

__all__ = [
    "ApiKey",
    "Base",
    "Checkpoint",
    "Dataset",
    "Job",
    "JobEvent",
    "Model",
    "Upload",
    "UploadPart",
    "UploadReservation",
    "Webhook",
    "WebhookAttempt",
    "WebhookDelivery",
]
