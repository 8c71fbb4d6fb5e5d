"""When a task was first published (tasks.dispatched_at): the task deadline counts from there, not
from the job's creation, so a backlog held back by fair share never eats into it.

Revision ID: 0006_task_dispatched
Revises: 0005_task_logs
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_task_dispatched"
down_revision = "0005_task_logs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
    # Tasks published before this revision: their last publish is the best estimate there is.
    op.execute("UPDATE tasks SET dispatched_at = published_at WHERE published_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("dispatched_at")
