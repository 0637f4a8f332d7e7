from sqlalchemy import BigInteger
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base

SCHEDULER_ROW = 1


class SchedulerLock(Base):
    """One row. A scheduling pass starts by updating it, which serialises the passes of every
    API and worker process on PostgreSQL (a row lock) and on SQLite (the write lock) alike."""

    __tablename__ = "scheduler_lock"

    id: Mapped[int] = mapped_column(primary_key=True)
    passes: Mapped[int] = mapped_column(BigInteger, default=0)
