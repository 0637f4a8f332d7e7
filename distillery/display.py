"""Rich renderings of jobs, files and the queue, and a live progress bar fed by a job's events:
what ``distill`` prints, for any script that wants the same."""

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from distillery.types import Artifact, Event, File, Job, MetricPoint, QueueSnapshot

STATUS_STYLE = {
    "queued": "cyan",
    "running": "blue",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
}


def status(value: str) -> str:
    return f"[{STATUS_STYLE.get(value, 'white')}]{value}[/]"


def eta(seconds: float | None, step: int, total_steps: int) -> str:
    """The server's estimate of the training time left, as an estimate. After the last step the
    job still measures the student (accuracy, latency) and writes its artifacts, which the
    estimate does not count: "measuring", never "0 s"."""
    if step >= total_steps:
        return "measuring"
    return "" if seconds is None else f"eta ~{seconds:.0f}s"


class JobProgressBar:
    """A progress bar for one job: epoch, steps, the latest loss and validation accuracy, the
    server's ETA; status changes, warnings and errors printed above it. Feed it events."""

    def __init__(self, console: Console | None = None):
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[stats]}"),
            console=console,
        )
        self.bar: TaskID | None = None
        self.latest: dict[str, float] = {}  # loss and accuracy come on some events only

    def __enter__(self) -> "JobProgressBar":
        self.progress.start()
        self.bar = self.progress.add_task("queued", total=None, stats="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def __call__(self, event: Event) -> None:
        assert self.bar is not None, "use JobProgressBar as a context manager"
        data = event.data or {}
        for key in ("train_loss", "val_accuracy"):
            if data.get(key) is not None:
                self.latest[key] = float(data[key])
        if event.type == "progress" and "total_steps" in data:
            self._advance(data)
        elif event.type == "status":
            value = event.status or ""
            pad = " " * max(11 - len(value), 2)  # messages line up under the longest status
            self.progress.console.print(f"  {status(value)}{pad}{event.message}")
            if event.status and self.progress.tasks[0].total is None:  # no epochs to show yet
                self.progress.update(self.bar, description=event.status)
        elif event.level in ("warning", "error"):
            # Info-level logs (one per epoch and phase) stay in the job's events, not on screen.
            style = "yellow" if event.level == "warning" else "red"
            self.progress.console.print(f"  [{style}]{event.level}[/]  {event.message}")

    def _advance(self, data: dict[str, Any]) -> None:
        assert self.bar is not None
        phase = data.get("phase", "student")
        stats = [f"step {data['step']}/{data['total_steps']}"]
        # Curve points (losses) are the distilled student's; the baseline's run has none.
        if "train_loss" in self.latest and phase == "student":
            stats.append(f"loss {self.latest['train_loss']:.4f}")
        if "val_accuracy" in self.latest:
            stats.append(f"val acc {self.latest['val_accuracy']:.2%}")
        stats.append(eta(data.get("eta_seconds"), data["step"], data["total_steps"]))
        # The epoch counts within the phase; the bar and the steps span the whole job.
        self.progress.update(
            self.bar,
            description=f"{phase} epoch {data.get('epoch')}/{data.get('epochs')}",
            total=data["total_steps"],
            completed=data["step"],
            stats="  ".join(filter(None, stats)),
        )


class DownloadBars:
    """One bar per artifact, in bytes; pass ``update`` as ``on_progress`` to ``download_all``."""

    def __init__(self, console: Console | None = None):
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            transient=True,  # gone when done: the caller prints what it kept
        )
        self.bars: dict[str, TaskID] = {}

    def __enter__(self) -> "DownloadBars":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, artifact: Artifact, done: int, total: int | None) -> None:
        if artifact.name not in self.bars:
            self.bars[artifact.name] = self.progress.add_task(f"  {artifact.name}", total=total)
        self.progress.update(self.bars[artifact.name], completed=done, total=total)


ID_WIDTH = 31  # "file_" and 26 characters: ids are shown whole, for copying
STATUS_WIDTH = max(map(len, STATUS_STYLE))  # "cancelled", "succeeded"


def _table(*columns: str, title: str | None = None) -> Table:
    """A table whose ids and statuses are never cut short, on a narrow terminal or a pipe
    (80 columns): the other columns fold instead."""
    table = Table(title=title)
    for name in columns:
        if name in {"id", "job", "worker"}:
            table.add_column(name, no_wrap=True, min_width=ID_WIDTH)
        elif name == "status":
            table.add_column(name, no_wrap=True, min_width=STATUS_WIDTH)
        else:
            table.add_column(name, overflow="fold")
    return table


def nothing(what: str) -> Text:
    """What an empty listing prints instead of an empty table."""
    return Text(f"No {what}.", style="dim")


def files_table(files: Iterable[File]) -> Table | Text:
    table = _table("id", "purpose", "format", "filename", "bytes", "created")
    for f in files:
        table.add_row(
            f.id, f.purpose, f.format, f.filename, f"{f.bytes:,}", f"{f.created_at:%Y-%m-%d %H:%M}"
        )
    return table if table.row_count else nothing("files")


def file_table(f: File) -> Table:
    table = Table("field", "value", show_header=False)
    for key, value in f.model_dump(mode="json").items():
        table.add_row(key, str(value))
    return table


def jobs_table(jobs: Iterable[Job]) -> Table | Text:
    table = _table("id", "name", "status", "progress", "student", "created")
    for job in jobs:
        metrics = job.metrics or {}
        accuracy, perplexity = metrics.get("student_accuracy"), metrics.get("student_perplexity")
        quality = f"{accuracy:.2%}" if isinstance(accuracy, float) else ""
        if isinstance(perplexity, float):
            quality = f"ppl {perplexity:.2f}"
        table.add_row(
            job.id,
            job.name or "",
            status(job.status),
            f"{job.progress.fraction:.0%}" if job.progress else "",
            quality,
            f"{job.created_at:%Y-%m-%d %H:%M}",
        )
    return table if table.row_count else nothing("jobs")


def _percent(v: float) -> str:
    return f"{v:.2%}"


METRIC_ROWS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("teacher_accuracy", "teacher accuracy (validation)", _percent),
    ("student_accuracy", "student accuracy (validation)", _percent),
    ("baseline_accuracy", "same student, labels only (validation)", _percent),
    ("teacher_perplexity", "teacher perplexity (validation tokens)", "{:.2f}".format),
    ("student_perplexity", "student perplexity (validation tokens)", "{:.2f}".format),
    ("baseline_perplexity", "same student, cross-entropy only", "{:.2f}".format),
    ("agreement", "top-1 agreement with the teacher", _percent),
    ("token_agreement", "top-1 token agreement with the teacher", _percent),
    ("kl_divergence", "KL(teacher ‖ student), T=1", "{:.4f}".format),
    ("teacher_params", "teacher parameters", "{:,}".format),
    ("student_params", "student parameters", "{:,}".format),
    ("compression_ratio", "compression", "{:.1f}x".format),
    ("student_size_bytes", "student size", lambda v: f"{v / 1024:.1f} KiB"),
    ("teacher_latency_ms", "teacher latency (batch 1)", "{:.3f} ms".format),
    ("student_latency_ms", "student latency (batch 1)", "{:.3f} ms".format),
    ("teacher_tokens_per_second", "teacher generation (batch 1)", "{:.1f} tokens/s".format),
    ("student_tokens_per_second", "student generation (batch 1)", "{:.1f} tokens/s".format),
    ("speedup", "speedup", "{:.1f}x".format),
    ("train_tokens", "tokens trained on", "{:,}".format),
    ("teacher_cache", "teacher signal", str),
    ("teacher_signal_bytes_per_token", "stored signal per token", "{:.0f} bytes".format),
    ("train_seconds", "training time", "{:.1f} s".format),
]


def metrics_table(job: Job) -> Table:
    """The final measurements of a job, in words."""
    table = Table(title=f"{job.name or 'job'} ({job.id})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    metrics = job.metrics or {}
    for key, label, fmt in METRIC_ROWS:
        if metrics.get(key) is not None:
            table.add_row(label, fmt(metrics[key]))
    return table


def job_table(job: Job) -> Table:
    table = Table(show_header=False, title=job.id)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("name", job.name or "")
    table.add_row("status", status(job.status) + (" (cancel requested)" * job.cancel_requested))
    if job.queue_position is not None:
        table.add_row("queue position", str(job.queue_position))
    if job.progress:
        p = job.progress
        left = eta(p.eta_seconds, p.step, p.total_steps)
        table.add_row(
            "progress", f"{p.phase} epoch {p.epoch}/{p.epochs}, {p.fraction:.0%}  {left}".strip()
        )
    if job.error:
        table.add_row("error", f"[red]{job.error.code}[/]: {job.error.message}")
    student = job.spec.get("student") or {}
    teacher = job.spec.get("teacher") or {}
    table.add_row("teacher", str(teacher.get("file_id", "")))
    table.add_row("student", str(student.get("arch", "")))
    for label, when in (
        ("created", job.created_at),
        ("started", job.started_at),
        ("finished", job.finished_at),
    ):
        if when is not None:
            table.add_row(label, f"{when:%Y-%m-%d %H:%M:%S}")
    table.add_row("attempts", str(job.attempts))
    return table


def curve_table(points: list[MetricPoint]) -> Table:
    table = Table("epoch", "step", "train loss", "val acc")
    for p in points:
        table.add_row(
            str(p.epoch),
            str(p.step),
            f"{p.train_loss:.4f}" if p.train_loss is not None else "",
            f"{p.val_accuracy:.2%}" if p.val_accuracy is not None else "",
        )
    return table


def queue_tables(snapshot: QueueSnapshot) -> list[Table | Text]:
    """Workers, running and queued jobs, and the teams' use; each team shown the same way in
    every table (its name, or its id where the server hides another team's name)."""
    teams = {t.team_id: t.name or t.team_id for t in snapshot.teams}

    def team(team_id: str) -> str:
        return teams.get(team_id, team_id)

    workers = _table("worker", "host", "device", "status", "job", title="Workers")
    for w in snapshot.workers:
        device = f"{w.device} ({w.device_name})" if w.device_name else w.device
        workers.add_row(w.id, w.hostname, device, w.status, w.job_id or "")
    running = _table("job", "team", "name", "progress", title="Running")
    for entry in snapshot.running:
        job = entry.job
        done = f"{job.progress.fraction:.0%}" if job and job.progress else ""
        running.add_row(entry.id or "(another team's)", team(entry.team_id), _name(job), done)
    queued = _table("#", "job", "team", "name", title="Queued")
    for entry in snapshot.queued:
        position = "" if entry.queue_position is None else str(entry.queue_position)
        queued.add_row(
            position, entry.id or "(another team's)", team(entry.team_id), _name(entry.job)
        )
    usage = _table(
        "team", "running", "queued", "max running", f"{_seconds_of(snapshot)} (24 h)", title="Teams"
    )
    for t in snapshot.teams:
        usage.add_row(
            team(t.team_id),
            str(t.running),
            str(t.queued),
            str(t.max_running_jobs)
            + ("" if t.max_running_devices is None else f" ({t.max_running_devices} devices)"),
            f"{t.gpu_seconds_24h:,.1f}",
        )
    empty = ("workers", "running jobs", "queued jobs", "teams")
    return [
        table if table.row_count else nothing(what)
        for table, what in zip((workers, running, queued, usage), empty, strict=True)
    ]


def _seconds_of(snapshot: QueueSnapshot) -> str:
    """The use column, named after what the workers train on: GPU or CPU seconds."""
    kinds = {"cpu" if w.device.startswith("cpu") else "GPU" for w in snapshot.workers}
    if kinds == {"cpu"}:
        return "CPU s"
    return "GPU s" if kinds == {"GPU"} else "device s"


def _name(job: Job | None) -> str:
    return (job.name or "") if job else ""
