"""tenants on datasets, jobs and models; API keys; upload sizes for quotas

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 13:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.orm.base

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT_TABLES = ("dataset", "job", "model")


def upgrade() -> None:
    for table in TENANT_TABLES:
        with op.batch_alter_table(table) as batch:
            # Rows from before tenants belong to the tenant of an api without authentication.
            batch.add_column(
                sa.Column("tenant", sa.String(length=64), nullable=False, server_default="default")
            )
            batch.create_index(batch.f(f"ix_{table}_tenant"), ["tenant"], unique=False)
    with op.batch_alter_table("dataset") as batch:
        # The size of the uploaded archive; older datasets count as 0 against a quota.
        batch.add_column(
            sa.Column("upload_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.create_table(
        "api_key",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", app.orm.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", app.orm.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key")),
    )
    with op.batch_alter_table("api_key") as batch:
        batch.create_index(batch.f("ix_api_key_tenant"), ["tenant"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("api_key") as batch:
        batch.drop_index(batch.f("ix_api_key_tenant"))
    op.drop_table("api_key")
    with op.batch_alter_table("dataset") as batch:
        batch.drop_column("upload_bytes")
    for table in TENANT_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_index(batch.f(f"ix_{table}_tenant"))
            batch.drop_column("tenant")
