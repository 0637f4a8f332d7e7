from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow

DEFAULT_TEAM_ID = "team_default"


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    max_running_jobs: Mapped[int] = mapped_column(default=1)
    # Devices its running jobs may hold together; None: no limit beyond max_running_jobs.
    max_running_devices: Mapped[int | None]
    # Fair share: a team with twice the weight is entitled to twice the GPU time.
    weight: Mapped[float] = mapped_column(default=1.0)
    # Signs the team's webhooks (app/webhooks/); made on first need. Kept as is: an HMAC key
    # must be readable to sign with.
    webhook_secret: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
