"""job: CHECK constraint on status

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 10:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')"


def upgrade() -> None:
    # Batch mode: SQLite adds a constraint by copying the table.
    with op.batch_alter_table("job") as batch:
        batch.create_check_constraint("status", STATUSES)


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_constraint("status", type_="check")
