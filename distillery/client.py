"""``Client``: the service over HTTP, synchronous, on httpx."""

from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from distillery import config
from distillery._http import Transport
from distillery.admin import Keys, Teams
from distillery.files import Files
from distillery.jobs import Jobs
from distillery.spec import OnUpload
from distillery.types import Job, QueueSnapshot

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DEFAULT_MAX_RETRIES = 3


class Client:
    """A Distillery server and an API key.

    With no arguments, the server and key come from ``DISTILL_URL`` / ``DISTILL_API_KEY``, then
    the file ``distill login`` writes, then (for a server on this machine) the admin key that
    ``distill up`` keeps in ``./var/admin_key`` and ``http://127.0.0.1:8000``
    (``distillery.config``). Use it as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ):
        self.base_url, self.api_key = config.resolve(base_url, api_key)
        self._transport = Transport(self.base_url, self.api_key, timeout, max_retries)
        self.files = Files(self)
        self.jobs = Jobs(self)
        self.teams = Teams(self)
        self.keys = Keys(self)

    def queue(self, limit: int | None = None) -> QueueSnapshot:
        """Workers, running and queued jobs (details of this team's only), every team's use."""
        params = {"limit": limit} if limit is not None else {}
        return QueueSnapshot.model_validate(
            self._transport.request("GET", "/v1/queue", params=params).json()
        )

    def distil(
        self,
        teacher: str | Path,
        train: str | Path,
        validation: str | Path | None = None,
        *,
        on_upload: OnUpload | None = None,
        **spec: Any,
    ) -> Job:
        """Upload a teacher and its data from local paths and submit a job; ``spec`` holds the
        rest (``student=``, ``hyperparameters=``, ``name=``...)."""
        teacher_part = {**spec.pop("teacher", {}), "path": str(teacher)}
        data = {**spec.pop("data", {}), "train_path": str(train)}
        if validation is not None:
            data["validation_path"] = str(validation)
        return self.jobs.create(
            {"teacher": teacher_part, "data": data, **spec}, on_upload=on_upload
        )

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r})"
