"""``client.jobs``: submit, list, follow, cancel, and download what a job made."""

import builtins
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import EventSource

from distillery import _download
from distillery._http import backoff
from distillery._resource import MAX_PAGE, Resource
from distillery.errors import APIConnectionError, ConfigurationError, WaitTimeoutError
from distillery.spec import OnUpload, check, merge, upload_local_files
from distillery.types import Artifact, Event, Job, MetricPoint

SSE_READ_TIMEOUT_S = 60.0  # the server sends a keep-alive every 15 s
SSE_RECONNECT_S = 1.0


class Jobs(Resource):
    def create(
        self,
        spec: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        base_dir: str | Path | None = None,
        on_upload: OnUpload | None = None,
        reuse_uploads: bool = True,
        **fields: Any,
    ) -> Job:
        """Submit a job: ``spec`` (a dict as the contract describes), ``fields`` on top of it.
        Local paths in the spec (``teacher.path``, ``data.train_path``,
        ``data.validation_path``) are uploaded first (``distillery.spec``), unless the team
        already has a file with the same bytes and purpose (``reuse_uploads``).

        The request carries an ``Idempotency-Key`` (one per call, or ``idempotency_key``), so a
        retry after a lost answer returns the job the first attempt made, never a second one.

        The spec's shape is checked before anything is uploaded (``distillery.spec.check``):
        a misspelt field raises ``InvalidSpecError`` naming it, and nothing is sent."""
        full = merge(spec, fields)
        check(full)
        body = upload_local_files(
            self._client,
            full,
            base_dir=base_dir,
            on_upload=on_upload,
            reuse=reuse_uploads,
        )
        headers = {"Idempotency-Key": idempotency_key or f"distillery-{uuid.uuid4()}"}
        response = self._transport.request(
            "POST", "/v1/jobs", json=body, headers=headers, retry=True
        )
        return Job.model_validate(response.json())

    def list(
        self,
        status: str | None = None,
        *,
        page_size: int = MAX_PAGE,
        limit: int | None = None,
    ) -> Iterator[Job]:
        """The team's jobs, newest first, across all pages (``limit``: at most that many)."""
        return self._pages(
            "/v1/jobs", Job.model_validate, page_size=page_size, limit=limit, status=status
        )

    def get(self, job_id: str) -> Job:
        return Job.model_validate(self._get(f"/v1/jobs/{job_id}"))

    def cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one gets ``cancel_requested`` and stops
        within seconds. A final job raises ``ConflictError`` (``job_finished``)."""
        response = self._transport.request("POST", f"/v1/jobs/{job_id}/cancel", retry=False)
        return Job.model_validate(response.json())

    def metrics(self, job_id: str) -> builtins.list[MetricPoint]:
        """The training curve, in step order."""
        return list(
            self._pages(
                f"/v1/jobs/{job_id}/metrics",
                MetricPoint.model_validate,
                cursor=lambda point: point.step,
            )
        )

    def artifacts(self, job_id: str) -> builtins.list[Artifact]:
        body = self._get(f"/v1/jobs/{job_id}/artifacts", limit=MAX_PAGE)
        return [Artifact.model_validate(a) for a in body["data"]]

    # --- events -------------------------------------------------------------------------------

    def events(
        self, job_id: str, after: str | None = None, *, follow: bool = True
    ) -> Iterator[Event]:
        """The job's events, oldest first, after the event id ``after``.

        Following (the default), they come live from the Server-Sent Events stream until the
        job's final status; a stream that breaks off is reopened from the last event seen.
        With ``follow=False``, the events so far, and the iterator ends."""
        if not follow:
            return self._pages(f"/v1/jobs/{job_id}/events", Event.model_validate, start_after=after)
        return self._follow(job_id, after, deadline=None)

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_event: Callable[[Event], Any] | None = None,
    ) -> Job:
        """Follow the job's events until it is final, then return it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for event in self._follow(job_id, None, deadline):
            if on_event is not None:
                on_event(event)
        return self.get(job_id)

    def _follow(self, job_id: str, after: str | None, deadline: float | None) -> Iterator[Event]:
        failures = 0
        while True:
            try:
                for event in self._stream(job_id, after, deadline):
                    after, failures = event.id, 0
                    yield event
                    if event.status in {"succeeded", "failed", "cancelled"}:
                        return
                    _check(deadline, job_id)
            except httpx.TransportError as e:  # broke off mid-stream, or a quiet read timed out
                _check(deadline, job_id)
                failures += 1
                if failures > self._transport.max_retries:
                    message = f"The event stream of {job_id} kept failing: {e}."
                    raise APIConnectionError(message) from e
                time.sleep(backoff(failures))
                continue
            # The stream ended without a final status (a restart, a proxy): is the job final?
            if self.get(job_id).is_final:
                return
            _check(deadline, job_id)
            time.sleep(SSE_RECONNECT_S)

    def _stream(self, job_id: str, after: str | None, deadline: float | None) -> Iterator[Event]:
        read = SSE_READ_TIMEOUT_S
        if deadline is not None:
            read = max(min(read, deadline - time.monotonic()), 0.1)
        headers = {"Accept": "text/event-stream"}
        if after:
            headers["Last-Event-ID"] = after
        with self._transport.stream(
            "GET",
            f"/v1/jobs/{job_id}/events",
            headers=headers,
            params={"after": after} if after else None,
            timeout=httpx.Timeout(10.0, read=read),
        ) as response:
            for message in EventSource(response).iter_sse():
                # A keep-alive comment ends in a blank line too, which makes a message without data.
                if message.data:
                    yield Event.model_validate(message.json())

    # --- artifacts ----------------------------------------------------------------------------

    def download(
        self,
        job_id: str,
        name: str,
        path: str | Path | None = None,
        *,
        on_progress: _download.ProgressCallback | None = None,
    ) -> Path:
        """The artifact ``name`` into ``path`` (a file name, or a folder to put it in: an
        existing one or one ending in "/"; default: the current folder). Resumes a partial
        download, checks the sha256, renames into place."""
        # Unlisted, the server answers the GET in its own words (404, param "name").
        artifact = next((a for a in self.artifacts(job_id) if a.name == name), None)
        dest = Path(path) if path is not None else Path(".")
        if path is None or dest.is_dir() or str(path).endswith(("/", os.sep)):
            dest = dest / _plain(name)
        return _download.download(
            self._transport,
            f"/v1/jobs/{job_id}/artifacts/{_plain(name)}",
            dest,
            sha256=artifact.sha256 if artifact else None,
            size=artifact.bytes if artifact else None,
            on_progress=on_progress,
        )

    def download_all(
        self,
        job_id: str,
        directory: str | Path = ".",
        *,
        on_progress: Callable[[Artifact, int, int | None], Any] | None = None,
    ) -> builtins.list[Path]:
        """Every artifact of the job into ``directory`` (created if need be)."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for artifact in self.artifacts(job_id):
            progress = None
            if on_progress is not None:
                progress = _bind(on_progress, artifact)
            paths.append(
                _download.download(
                    self._transport,
                    f"/v1/jobs/{job_id}/artifacts/{_plain(artifact.name)}",
                    folder / _plain(artifact.name),
                    sha256=artifact.sha256,
                    size=artifact.bytes,
                    on_progress=progress,
                )
            )
        return paths


def _plain(name: str) -> str:
    """An artifact name as a file name: never a path out of the destination folder."""
    if not name or Path(name).name != name or name in {".", ".."}:
        raise ConfigurationError(f"Refusing artifact name {name!r}: not a plain file name.")
    return name


def _bind(
    callback: Callable[[Artifact, int, int | None], Any], artifact: Artifact
) -> _download.ProgressCallback:
    return lambda done, total: callback(artifact, done, total)


def _check(deadline: float | None, job_id: str) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise WaitTimeoutError(f"Job {job_id} was not final before the timeout.")
