"""The fair-share queue: team weights, dispatch marks, worker memory and version, the
scheduler's lock row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 21:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.add_column(sa.Column("weight", sa.Float(), nullable=False, server_default="1.0"))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            "ix_jobs_queue_order",
            ["status", "team_id", sa.text("priority DESC"), "created_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_jobs_dispatch", ["status", "dispatched_at", "team_id"], unique=False
        )
        batch_op.create_index("ix_jobs_finished_at", ["finished_at"], unique=False)
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("memory_bytes", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("version", sa.String(length=40), nullable=True))
    lock = op.create_table(
        "scheduler_lock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("passes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduler_lock")),
    )
    op.bulk_insert(lock, [{"id": 1, "passes": 0}])


def downgrade() -> None:
    op.drop_table("scheduler_lock")
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("version")
        batch_op.drop_column("memory_bytes")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_finished_at")
        batch_op.drop_index("ix_jobs_dispatch")
        batch_op.drop_index("ix_jobs_queue_order")
        batch_op.drop_column("dispatched_at")
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.drop_column("weight")
