"""model and dataset: stored and prepared bytes; job: checkpoint bytes

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 13:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column): each counted against CLIPFT_TENANT_MAX_STORED_BYTES. Rows older than this
# migration count 0 until the worker measures them again (a migration does not read the data
# directory).
COLUMNS = (("model", "stored_bytes"), ("dataset", "prepared_bytes"), ("job", "checkpoint_bytes"))


def upgrade() -> None:
    for table, column in COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column(column, sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    for table, column in reversed(COLUMNS):
        with op.batch_alter_table(table) as batch:
            batch.drop_column(column)
