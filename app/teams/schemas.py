from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    max_running_jobs: int = Field(default=1, ge=0, le=1000, description="0 pauses the team.")
    weight: float = Field(default=1.0, gt=0, le=1000, description="Fair-share weight.")


class TeamUpdate(BaseModel):
    """What the admin may change: the quota and the fair-share weight."""

    model_config = ConfigDict(extra="forbid")

    max_running_jobs: int | None = Field(default=None, ge=0, le=1000)
    weight: float | None = Field(default=None, gt=0, le=1000)


class TeamOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    object: Literal["team"] = "team"
    name: str
    max_running_jobs: int
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
