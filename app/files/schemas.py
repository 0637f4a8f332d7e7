from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Purpose(StrEnum):
    teacher = "teacher"
    dataset = "dataset"


class FileOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    object: Literal["file"] = "file"
    filename: str
    bytes: int
    sha256: str
    purpose: Purpose
    format: str
    meta: dict[str, Any] = Field(
        default_factory=dict,
        description="What detection recorded: e.g. a data set's shape and label kind.",
    )
    created_at: datetime
