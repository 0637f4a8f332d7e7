from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from jobspec.strict import Float, Int

# A team's fair-share key is its usage divided by its weight (app/queue/fair_share.py): these
# bounds keep that ratio finite and the ratio between two teams at most a million.
MIN_WEIGHT, MAX_WEIGHT = 0.001, 1000.0


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    max_running_jobs: Int = Field(default=1, ge=0, le=1000, description="0 pauses the team.")
    max_running_devices: Int | None = Field(
        default=None,
        ge=0,
        le=100000,
        description="Devices its running jobs may hold together; null: no limit beyond "
        "max_running_jobs.",
    )
    weight: Float = Field(
        default=1.0, ge=MIN_WEIGHT, le=MAX_WEIGHT, description="Fair-share weight."
    )


class TeamUpdate(BaseModel):
    """What the admin may change: the quotas and the fair-share weight. A field left out stays
    as it is; ``max_running_devices: null`` lifts the device quota."""

    model_config = ConfigDict(extra="forbid")

    max_running_jobs: Int | None = Field(default=None, ge=0, le=1000)
    max_running_devices: Int | None = Field(default=None, ge=0, le=100000)
    weight: Float | None = Field(default=None, ge=MIN_WEIGHT, le=MAX_WEIGHT)


class TeamOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    object: Literal["team"] = "team"
    name: str
    max_running_jobs: int
    max_running_devices: int | None
    weight: float
    created_at: datetime


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)


class KeyOut(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    team_id: str
    key: str = Field(description="The secret. Shown once, never again.")
    created_at: datetime
