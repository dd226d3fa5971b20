from app.orm.base import Base
from app.orm.tables import ApiKey, Checkpoint, Dataset, Job, JobEvent, Model, UploadReservation

__all__ = [
    "ApiKey",
    "Base",
    "Checkpoint",
    "Dataset",
    "Job",
    "JobEvent",
    "Model",
    "UploadReservation",
]
