"""Per-user limits and fair dispatch: output sizes of tasks (filled in from the results already
stored), the dispatch lease, the users' token buckets, an index to count each user's unfinished
tasks, and input sizes as 64-bit integers (a file may pass 2 GiB).

Revision ID: 0003_limits
Revises: 0002
Create Date: 2025-06-01
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0003_limits"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("output_bytes", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch.alter_column("size", type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=False)
    _fill_output_bytes()
    op.create_index("ix_tasks_status_user_id", "tasks", ["status", "user_id"])
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("tokens_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_users"),
    )


def _fill_output_bytes() -> None:
    """Output sizes of the tasks that succeeded before this revision, from their stored results."""
    conn = op.get_bind()
    tasks = sa.table("tasks", sa.column("task_id"), sa.column("result"), sa.column("status"),
                     sa.column("output_bytes"))
    rows = conn.execute(sa.select(tasks.c.task_id, tasks.c.result).where(tasks.c.status == "SUCCESS"))
    updates = []
    for task_id, result in rows:
        if isinstance(result, str):  # JSON read back as text by some drivers
            result = json.loads(result)
        outputs = (result or {}).get("outputs") or []
        size = sum(int(o.get("size") or 0) for o in outputs if isinstance(o, dict))
        if size:
            updates.append({"t_id": task_id, "size": size})
    if updates:
        by_id = tasks.c.task_id == sa.bindparam("t_id")
        conn.execute(sa.update(tasks).where(by_id).values(output_bytes=sa.bindparam("size")), updates)


def downgrade() -> None:
    op.drop_table("users")
    op.drop_index("ix_tasks_status_user_id", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.alter_column("size", type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=False)
        batch.drop_column("claimed_at")
        batch.drop_column("output_bytes")
