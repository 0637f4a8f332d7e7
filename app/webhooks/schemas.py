from typing import Literal

from pydantic import BaseModel, Field


class WebhookSecretOut(BaseModel):
    object: Literal["webhook_secret"] = "webhook_secret"
    team_id: str
    secret: str = Field(description="Keys the HMAC-SHA256 of the team's webhooks.")
