"""The job spec as the API takes it: the shared model (``jobspec``) plus the checks that need this
server's settings, such as where a webhook may go."""

from pydantic import HttpUrl, field_validator

from app.webhooks import targets
from jobspec import JobSpec as _SharedSpec


class JobSpec(_SharedSpec):
    @field_validator("webhook_url")
    @classmethod
    def _an_allowed_receiver(cls, url: HttpUrl | None) -> HttpUrl | None:
        if url is not None:
            targets.check_url(str(url))
        return url
