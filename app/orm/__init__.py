from app.orm.base import Base
from app.orm.models import Checkpoint, Dataset, Job, JobEvent, Model

__all__ = ["Base", "Checkpoint", "Dataset", "Job", "JobEvent", "Model"]
