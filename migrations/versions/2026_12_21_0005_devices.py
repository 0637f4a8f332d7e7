"""Jobs of several devices: how many each job takes and which workers hold it, the direct queue
each worker consumes, and a team's device quota.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-21 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("devices", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(
            sa.Column(
                "placement",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queue", sa.String(length=255), nullable=True))
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_running_devices", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.drop_column("max_running_devices")
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("queue")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("placement")
        batch_op.drop_column("devices")
