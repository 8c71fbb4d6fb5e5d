"""Idempotency keys of jobs: a client's Idempotency-Key, unique per user, removed with its job.

Revision ID: 0004_idempotency
Revises: 0003_limits
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_idempotency"
down_revision = "0003_limits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_keys",
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.job_id"], name="fk_job_keys_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "idempotency_key", name="pk_job_keys"),
    )
    op.create_index("ix_job_keys_job_id", "job_keys", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_job_keys_job_id", table_name="job_keys")
    op.drop_table("job_keys")
