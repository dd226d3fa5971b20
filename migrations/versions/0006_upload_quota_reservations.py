"""dataset: stored bytes; upload_reservation: quota held by uploads in progress

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 12:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.orm.base

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dataset") as batch:
        batch.add_column(
            sa.Column("stored_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
    # What older datasets keep on disk is not measured here (a migration does not read the data
    # directory); their archive size is the best count there is.
    op.execute("UPDATE dataset SET stored_bytes = upload_bytes")
    op.create_table(
        "upload_reservation",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("reserved_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", app.orm.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upload_reservation")),
    )
    with op.batch_alter_table("upload_reservation") as batch:
        batch.create_index(batch.f("ix_upload_reservation_tenant"), ["tenant"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("upload_reservation") as batch:
        batch.drop_index(batch.f("ix_upload_reservation_tenant"))
    op.drop_table("upload_reservation")
    with op.batch_alter_table("dataset") as batch:
        batch.drop_column("stored_bytes")
