"""A language model's pretrained student file, which deleting the file must respect while a job
needs it, as its teacher and data files.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-20 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("student_file_id", sa.String(length=40), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_jobs_student_file_id"), ["student_file_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_student_file_id"))
        batch_op.drop_column("student_file_id")
