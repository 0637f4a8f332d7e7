"""What goes in (``EngineJob``), what comes out (``EngineResult``), and how the engine reports on
the way (``Callbacks``)."""

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from jobspec import JobSpec

Phase = Literal["student", "baseline"]  # the distillation run, then the optional labels-only one


@dataclass
class EngineJob:
    spec: JobSpec
    teacher_path: Path
    teacher_format: str  # torchscript | torch_export | state_dict | safetensors | hf_archive | gguf
    train_path: Path
    train_format: str  # npz | safetensors | csv | jsonl
    validation_path: Path | None
    validation_format: str | None
    output_dir: Path
    checkpoint_path: Path  # resumed from when it exists at start
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # Several devices (worker/engine/distributed.py): the job trains on ``world_size`` ranks,
    # processes that ``run_job`` starts itself, rank r on ``devices[r]`` ("cuda:0", "cuda:1",
    # ...; one per rank), or, with ``devices`` empty, on ``device`` (a CPU job: every rank on
    # the CPU; a GPU job: rank r on cuda:r). ``spec.distributed.strategy`` says ddp or fsdp.
    world_size: int = 1
    devices: list[str] = field(default_factory=list)
    # A language model's pretrained starting point (the spec's ``{"file_id": ...}`` student).
    student_path: Path | None = None
    student_format: str | None = None  # hf_archive | gguf
    progress_interval: float = 1.0  # seconds between progress callbacks
    # The teacher's logits on the training rows are computed once per job unless this is False
    # (then the teacher runs on every batch). With ``cache_dir`` they are also stored there and
    # reused by later jobs on the same teacher and data; ``teacher_sha256`` (the teacher file's)
    # saves hashing the file again.
    teacher_cache: bool = True
    cache_dir: Path | None = None
    teacher_sha256: str | None = None
    # A Hugging Face teacher archive may unpack to at most this many bytes (zip bombs).
    max_unpacked_bytes: int = 4 * 2**30
    # For the model card only: the job's id and the names its files were uploaded under
    # ("teacher", "student" for a pretrained one, "train", "validation"), which the staged
    # paths do not show.
    job_id: str | None = None
    file_names: dict[str, str] = field(default_factory=dict)


@dataclass
class Progress:
    """The job's ``progress`` object. ``epoch`` counts within the current ``phase`` and ``epochs``
    is the spec's, in either phase; ``step``, ``total_steps``, ``fraction`` and ``eta_seconds``
    span the whole job, the baseline's training (and every sweep run) included."""

    phase: Phase
    epoch: int
    epochs: int
    step: int
    total_steps: int
    fraction: float
    eta_seconds: float | None
    # In a sweep: the run under way (0-based; None in the baseline) and how many there are.
    run: int | None = None
    runs: int | None = None

    def as_dict(self) -> dict[str, Any]:
        progress = asdict(self)
        if self.runs is None:  # no sweep: the contract's fields only
            del progress["run"], progress["runs"]
        return progress


@dataclass
class EngineResult:
    metrics: dict  # also written to output_dir/metrics.json
    artifacts: list[Path] = field(default_factory=list)


class Callbacks(Protocol):
    def on_progress(self, progress: Progress, points: list[dict]) -> None:
        """At most once per ``progress_interval`` and at every epoch end. ``points`` are the metric
        points since the previous call: {step, epoch, train_loss, kd_loss, ce_loss, learning_rate}
        plus val_accuracy, val_loss and val_agreement on the epoch-end point."""

    def on_log(self, level: str, message: str, data: dict | None = None) -> None:
        """``level`` is info, warning or error."""

    def should_stop(self) -> bool:
        """Polled with every progress call; True: the engine checkpoints, raises JobCancelled."""
        ...

    def on_checkpoint(self, path: Path) -> None:
        """The engine has just written the job's checkpoint to ``path`` (``checkpoint_path``),
        whole; a caller that keeps checkpoints elsewhere copies it from there."""

    def on_teacher_cache(self, path: Path) -> None:
        """A teacher-output cache entry this job uses, in ``cache_dir``: just written, or found
        there; only with a ``cache_dir``. A file (``<key>.safetensors``, or a language model's
        ``completions/<key>.jsonl``) or a language model's stored signal, the directory
        ``signals/<key>/`` once its manifest is written. Once per entry."""


class NullCallbacks:
    """Reports nowhere and never stops; subclass it to override only what you need."""

    def on_progress(self, progress: Progress, points: list[dict]) -> None:
        pass

    def on_log(self, level: str, message: str, data: dict | None = None) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def on_checkpoint(self, path: Path) -> None:
        pass

    def on_teacher_cache(self, path: Path) -> None:
        pass
