"""job: control dataset and report

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 09:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite cannot add a foreign key to an existing table in place.
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("control_dataset_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("report", sa.JSON(), nullable=True))
        batch.create_foreign_key(
            batch.f("fk_job_control_dataset_id_dataset"),
            "dataset",
            ["control_dataset_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_constraint(batch.f("fk_job_control_dataset_id_dataset"), type_="foreignkey")
        batch.drop_column("report")
        batch.drop_column("control_dataset_id")
