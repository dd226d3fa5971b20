"""upload, upload_part: resumable uploads, chunk by chunk

New tables only: the downgrade drops them and loses only uploads still in progress.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 21:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.orm.base

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "upload",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("filename", sa.String(length=200), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", app.orm.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.orm.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('receiving', 'completing', 'completed')",
            name=op.f("ck_upload_upload_status_known"),
        ),
        sa.CheckConstraint("received <= size", name=op.f("ck_upload_upload_received_within_size")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upload")),
    )
    with op.batch_alter_table("upload") as batch:
        batch.create_index(batch.f("ix_upload_tenant"), ["tenant"], unique=False)
    op.create_table(
        "upload_part",
        sa.Column("upload_id", sa.String(length=32), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["upload_id"],
            ["upload.id"],
            name=op.f("fk_upload_part_upload_id_upload"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("upload_id", "offset", name=op.f("pk_upload_part")),
    )


def downgrade() -> None:
    op.drop_table("upload_part")
    with op.batch_alter_table("upload") as batch:
        batch.drop_index(batch.f("ix_upload_tenant"))
    op.drop_table("upload")
