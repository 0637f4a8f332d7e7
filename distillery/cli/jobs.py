"""``distill jobs``: submit (and wait), list, show, cancel, watch, download."""

import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from distillery import Artifact, Client, File, Job
from distillery._download import sha256_of
from distillery.cli._common import OUTCOME_EXIT, Json, console, fail, friendly, print_json, to_json
from distillery.display import (
    DownloadBars,
    JobProgressBar,
    curve_table,
    job_table,
    jobs_table,
    metrics_table,
    status,
)

app = typer.Typer(help="Distillation jobs.", no_args_is_help=True)


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


Output = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Folder for the artifacts (default: ./JOB_ID)."),
]
Force = Annotated[
    bool,
    typer.Option("--force", help="Write into the output folder even if it holds other files."),
]


def check_output(folder: Path | None, force: bool, artifacts: list[Artifact] | None = None) -> None:
    """Refuse a folder that holds files of something else (an earlier student), unless
    ``force``. ``artifacts``: this job's, whose files (whole or partly downloaded) may be there
    already: a download resumes into its own folder."""
    if force or folder is None or not folder.is_dir():
        return
    mine = {a.name: a.sha256 for a in artifacts or []}
    for entry in folder.iterdir():
        name = entry.name.removesuffix(".part")
        if name not in mine:
            break
        if entry.name == name and not _is_artifact(entry, mine[name]):
            break
    else:
        return
    raise fail(
        f"{folder} already holds {entry.name}, which is not this job's: choose an empty folder, "
        "or pass --force to write into it anyway.",
        code="output_not_empty",
    )


def _is_artifact(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_of(path) == sha256


def _spec_loader(yaml: Any) -> Any:
    """PyYAML's SafeLoader, reading ``1e-3`` as a number as YAML 1.2 and JSON do (PyYAML's
    YAML 1.1 wants ``1.0e-3``): the API takes numbers only as numbers, never as strings."""

    class SpecLoader(yaml.SafeLoader):
        pass

    exponent = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$")
    SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", exponent, list("-+0123456789."))
    return SpecLoader


def load_spec(path: Path) -> dict[str, Any]:
    """A job spec from JSON, or from YAML when PyYAML is installed."""
    text = path.read_text()
    if path.suffix.lower() in {".yaml", ".yml"}:
        try:
            import yaml
        except ImportError:
            raise fail(
                "YAML specs need PyYAML (pip install pyyaml); or write the spec as JSON."
            ) from None
        try:
            spec = yaml.load(text, Loader=_spec_loader(yaml))  # a SafeLoader subclass
        except yaml.YAMLError as e:
            raise fail(f"{path} is not valid YAML: {e}", code="invalid_spec") from None
    else:
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as e:
            raise fail(f"{path} is not valid JSON: {e}", code="invalid_spec") from None
    if not isinstance(spec, dict):
        raise fail(f"{path} must hold one object, the job spec.", code="invalid_spec")
    return spec


@app.command("submit")
@friendly
def submit(
    spec_file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="The job spec, .json or .yaml.")
    ],
    name: Annotated[str | None, typer.Option(help="The job's name (overrides the spec's).")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Watch the job to its end and download the artifacts.")
    ] = False,
    output: Output = None,
    force: Force = False,
    as_json: Json = False,
) -> None:
    """Submit a job from a spec file; --wait follows it and downloads the student.

    Local files in the spec (teacher.path, data.train_path, data.validation_path, relative to
    the spec's folder) are uploaded first. With --wait the exit status is the job's outcome:
    0 succeeded, 3 failed, 4 cancelled.
    """
    if wait:
        check_output(output, force)  # before anything is uploaded or submitted
    spec = load_spec(spec_file)
    if name is not None:
        spec["name"] = name
    out = console()

    def uploaded(path: Path, file: File, reused: bool) -> None:
        if not as_json:
            verb = "reusing" if reused else "uploaded"
            out.print(f"  {verb} {path} -> {file.id} ({file.format})", soft_wrap=True)

    with Client() as client:
        job = client.jobs.create(spec, base_dir=spec_file.parent, on_upload=uploaded)
        if not wait:
            if as_json:
                print_json(job)
            else:
                out.print(f"Submitted {job.id} ({status(job.status)})")
            return
        final, downloaded = _wait_and_download(client, job, output, as_json=as_json)
    if as_json:
        print_json({**to_json(final), "downloaded": [str(p) for p in downloaded]})
    elif final.metrics:
        out.print(metrics_table(final))
    raise typer.Exit(OUTCOME_EXIT.get(final.status, 1))


def _wait_and_download(
    client: Client, job: Job, output: Path | None, *, as_json: bool
) -> tuple[Job, list[Path]]:
    if not as_json:
        console().print(f"Submitted {job.id}; following its events")
    final = _follow(client, job.id, as_json=as_json, print_events=False)
    if final.status != "succeeded":
        return final, []
    return final, _download_all(client, final, output, as_json=as_json)


@app.command("list")
@friendly
def list_jobs(
    status_: Annotated[JobStatus | None, typer.Option("--status", help="Only these.")] = None,
    limit: Annotated[int, typer.Option(min=0, help="At most this many; 0 lists all.")] = 20,
    as_json: Json = False,
) -> None:
    """Your team's jobs, newest first."""
    with Client() as client:
        jobs = list(client.jobs.list(status_.value if status_ else None, limit=limit or None))
    if as_json:
        print_json(jobs)
    else:
        console().print(jobs_table(jobs))


@app.command("show")
@friendly
def show(job_id: str, as_json: Json = False) -> None:
    """A job: status, progress, error, measurements, training curve and artifacts."""
    with Client() as client:
        job = client.jobs.get(job_id)
        curve = client.jobs.metrics(job_id)
        artifacts = client.jobs.artifacts(job_id)
    if as_json:
        print_json({**to_json(job), "curve": to_json(curve), "artifacts": to_json(artifacts)})
        return
    out = console()
    out.print(job_table(job))
    if job.metrics:
        out.print(metrics_table(job))
    if curve:
        out.print(curve_table(curve[-10:]))
    for a in artifacts:
        out.print(f"  {a.name:24} {a.bytes:>12,} bytes  sha256 {a.sha256[:12]}…")


@app.command("cancel")
@friendly
def cancel(job_id: str, as_json: Json = False) -> None:
    """Cancel a job: at once while queued, within seconds while running."""
    with Client() as client:
        job = client.jobs.cancel(job_id)
    if as_json:
        print_json(job)
    elif job.status == "cancelled":
        console().print(f"Cancelled {job.id}.")
    else:
        console().print(f"Asked {job.id} to stop; it is cancelled within seconds.")


@app.command("watch")
@friendly
def watch(job_id: str, as_json: Json = False) -> None:
    """Follow a job live until it ends; exit 0 succeeded, 3 failed, 4 cancelled.

    With --json: one event per line, then the final job.
    """
    with Client() as client:
        final = _follow(client, job_id, as_json=as_json, print_events=as_json)
    if as_json:
        print_json(final)
    raise typer.Exit(OUTCOME_EXIT.get(final.status, 1))


@app.command("download")
@friendly
def download(
    job_id: str,
    output: Output = None,
    name: Annotated[
        str | None, typer.Option(help="One artifact, e.g. student.pt [default: all].")
    ] = None,
    force: Force = False,
    as_json: Json = False,
) -> None:
    """Download a job's artifacts, verified; an interrupted download resumes.

    Each file is checked against its sha256 before it is renamed into place.
    """
    with Client() as client:
        job = client.jobs.get(job_id)
        check_output(output or Path(job.id), force, client.jobs.artifacts(job.id))
        if name is None:
            paths = _download_all(client, job, output, as_json=as_json)
        else:
            folder = output or Path(job.id)
            folder.mkdir(parents=True, exist_ok=True)
            paths = [client.jobs.download(job.id, name, folder)]
    if as_json:
        print_json([str(p) for p in paths])
    elif name is not None:
        console().print(f"  {paths[0]}  sha256 ok")


def _follow(client: Client, job_id: str, *, as_json: bool, print_events: bool) -> Job:
    if as_json:
        on_event = (lambda e: print_json(e)) if print_events else None
        return client.jobs.wait(job_id, on_event=on_event)
    out = console()
    with JobProgressBar(out) as bar:
        final = client.jobs.wait(job_id, on_event=bar)
    if final.error:
        out.print(f"[red]{final.status}[/]: {final.error.message} ({final.error.code})")
    else:
        out.print(f"{final.id} {status(final.status)}")
    return final


def _download_all(client: Client, job: Job, output: Path | None, *, as_json: bool) -> list[Path]:
    folder = output or Path(job.id)
    if as_json:
        return client.jobs.download_all(job.id, folder)
    out = console()
    out.print(f"Downloading into {folder}/")
    with DownloadBars(out) as bars:
        paths = client.jobs.download_all(job.id, folder, on_progress=bars.update)
    for path in paths:
        out.print(f"  {path.name:24} {path.stat().st_size:>12,} bytes  sha256 ok")
    return paths
