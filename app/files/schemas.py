from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict


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
    created_at: datetime
