"""Per-task log lines from the processor (tasks.logs, a JSON list of strings; NULL: none yet).

Revision ID: 0005_task_logs
Revises: 0004_idempotency
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_task_logs"
down_revision = "0004_idempotency"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("logs", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("logs")
