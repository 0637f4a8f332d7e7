"""Decisions about jobs: submission, priority and cancellation. Their status changes go through
``app.jobs.lifecycle``."""

import hashlib
import json
import logging

from pydantic import ValidationError
from sqlalchemy.orm import Session

from app import logs
from app.config import get_settings
from app.db import after_commit
from app.errors import Conflict, InvalidRequest, NotFound, Unprocessable
from app.files import repository as files
from app.ids import new_id
from app.jobs import lifecycle, lm_checks, repository
from app.jobs.schemas import JobOut, job_out
from app.models import File, Job, JobStatus
from app.queue import scheduler
from jobspec import JobSpec, PretrainedArch, requirements
from jobspec import errors as validation_errors
from jobspec import warnings as job_warnings
from jobspec.requirements import SpecConflict

log = logging.getLogger(__name__)

# Formats the engine of this version can train from.
TRAINABLE_TEACHERS = {"torchscript", "torch_export", "state_dict", "safetensors", "hf_archive"}
# jsonl kinds only a language model reads ({"text"} lines suit a classifier too).
LM_ONLY_DATA = {"prompt_completion", "messages", "prompt"}
NEEDS_ARCH = {"state_dict", "safetensors"}
# Teachers whose layers the engine cannot see: compiled graphs, not modules it built.
OPAQUE_TEACHERS = {"torchscript", "torch_export"}


def render(
    session: Session,
    job: Job,
    queue: "scheduler.QueueView | None" = None,
    position: int | None = None,
) -> JobOut:
    """The job as the API shows it; ``queue`` shares one reading of the queue across a list,
    and a caller that knows the job's ``position`` already passes it."""
    if job.status == JobStatus.queued and position is None:
        position = (queue or scheduler.QueueView(session)).position(job)
    return job_out(job, position)


def get(session: Session, team_id: str, job_id: str) -> Job:
    job = repository.get_job(session, team_id, job_id)
    if job is None:
        raise NotFound(f"No job {job_id}.", param="job_id")
    return job


def _file(session: Session, team_id: str, file_id: str, purpose: str, param: str) -> File:
    file = files.get_file(session, team_id, file_id)
    if file is None:
        raise NotFound(f"No file {file_id}.", param=param)
    if file.purpose != purpose:
        raise Unprocessable(
            f"File {file_id} was uploaded with purpose '{file.purpose}', not '{purpose}'.",
            param=param,
            code="wrong_purpose",
        )
    return file


def check_inputs(
    session: Session, team_id: str, spec: JobSpec
) -> tuple[JobSpec, list[job_warnings.JobWarning]]:
    """Everything a submit checks of the spec against its files' recorded facts (raising the
    error a submit answers). Returns the spec as the job runs it, its task resolved (``_task``)
    with that task's defaults, and the warnings the files' facts foresee."""
    _check_devices(spec)
    teacher = _file(session, team_id, spec.teacher.file_id, "teacher", "teacher.file_id")
    spec = _for_task(spec, _task(spec, teacher))
    try:  # the engine checks it again before any rank starts
        requirements.check_distributed(spec)
    except SpecConflict as conflict:
        raise Unprocessable(conflict.message, param=conflict.param, code=conflict.code) from None
    datasets = _datasets(session, team_id, spec)
    if spec.task == "causal_lm":
        student = None
        if isinstance(spec.student, PretrainedArch):
            student = _file(session, team_id, spec.student.file_id, "teacher", "student.file_id")
        return lm_checks.check_language_model(spec, teacher, datasets, student)
    _check_not_language_model(spec, teacher, datasets)
    if teacher.format not in TRAINABLE_TEACHERS:
        raise Unprocessable(
            f"Teachers in '{teacher.format}' format cannot be distilled by this server yet; "
            f"use one of {sorted(TRAINABLE_TEACHERS)}.",
            param="teacher.file_id",
            code="unsupported_teacher",
        )
    if teacher.format in NEEDS_ARCH and spec.teacher.arch is None:
        raise Unprocessable(
            f"A '{teacher.format}' teacher holds weights only: describe its architecture in "
            'teacher.arch (e.g. {"arch": "mlp", "hidden_sizes": [256, 256]}).',
            param="teacher.arch",
            code="invalid_request",
        )
    _check_text(spec, teacher, datasets)
    _check_student(spec, teacher)
    _check_task(spec, datasets)
    train, validation = datasets[0][0], datasets[-1][0]  # validation: its file, or the train's
    try:  # the rules the engine checks again on the loaded data
        requirements.check_early_stopping_metric(spec)
        requirements.check_labels(
            spec, train.meta.get("has_labels", False), validation.meta.get("has_labels", False)
        )
    except SpecConflict as conflict:
        raise Unprocessable(conflict.message, param=conflict.param, code=conflict.code) from None
    return spec, job_warnings.before_training(spec, teacher.meta, train.meta)


def _task(spec: JobSpec, teacher: File) -> str:
    """The spec's own task where it names one; else causal_lm for a causal-LM teacher (an
    hf_archive *ForCausalLM or a gguf file), else classification."""
    if "task" in spec.model_fields_set:
        return spec.task
    return "causal_lm" if teacher.meta.get("task") == "causal_lm" else "classification"


def _for_task(spec: JobSpec, task: str) -> JobSpec:
    """The spec validated again for ``task``: its defaults, and its refusal of fields that only
    another task takes, told as a request body's error is."""
    try:
        return spec.with_task(task)
    except ValidationError as exc:
        body = spec.model_dump(mode="json", exclude_unset=True) | {"task": task}
        error = validation_errors.first_error(validation_errors.body_errors(exc))
        message, param = validation_errors.describe(error, body, JobSpec)
        raise InvalidRequest(message, param=param) from None


def _datasets(session: Session, team_id: str, spec: JobSpec) -> list[tuple[File, str]]:
    """The training file, and the validation file if there is one, each with its spec field."""
    train = _file(session, team_id, spec.data.train_file_id, "dataset", "data.train_file_id")
    datasets = [(train, "data.train_file_id")]
    if spec.data.validation_file_id is not None:
        validation = _file(
            session, team_id, spec.data.validation_file_id, "dataset", "data.validation_file_id"
        )
        datasets.append((validation, "data.validation_file_id"))
    return datasets


def _check_not_language_model(
    spec: JobSpec, teacher: File, datasets: list[tuple[File, str]]
) -> None:
    """A classifier's job takes neither a causal-LM teacher nor language-model data. Unlabelled
    ``{"text"}`` lines suit both: a classifier learns from the teacher alone on them."""
    if teacher.meta.get("task") == "causal_lm":
        raise Unprocessable(
            f"File {teacher.id} is a causal language model ({teacher.format}), which a "
            f'{spec.task} job cannot distil; drop "task" (or set it to "causal_lm") to distil '
            "it as a language model.",
            param="teacher.file_id",
            code="unsupported_teacher",
        )
    for data, param in datasets:
        if data.meta.get("lm_kind") in LM_ONLY_DATA:
            raise Unprocessable(
                f"File {data.id} holds {data.meta['lm_kind']} records, which are language-model "
                "data, but the teacher is a classifier, which reads jsonl lines of "
                '{"text", "label"} (the label optional). To distil a language model, upload a '
                "causal-LM teacher (an hf_archive of a *ForCausalLM model, or a gguf file).",
                param=param,
                code="unsupported_data",
            )


def _check_text(spec: JobSpec, teacher: File, datasets: list[tuple[File, str]]) -> None:
    """Text goes with a teacher that carries a tokenizer, and such a teacher reads only text."""
    text_teacher = teacher.format == "hf_archive"
    for data, param in datasets:
        if (data.format == "jsonl") != text_teacher:
            need = (
                "jsonl text, read by its tokenizer"
                if text_teacher
                else "tensors (npz, safetensors or csv)"
            )
            raise Unprocessable(
                f"File {data.id} is {data.format}, but a '{teacher.format}' teacher reads {need}.",
                param=param,
                code="unsupported_data",
            )
    if text_teacher and spec.task == "regression":
        raise Unprocessable(
            "Text jobs are classification; drop task regression.",
            param="task",
            code="invalid_request",
        )


def _check_student(spec: JobSpec, teacher: File) -> None:
    """Students and losses that need something of the teacher: its tokenizer or its layers."""
    arch = spec.student.arch
    if arch == "hf" and teacher.format != "hf_archive":
        raise Unprocessable(
            "An hf student reads text: it needs a Hugging Face teacher (hf_archive) and jsonl "
            "data; for tensors use mlp, cnn or transformer.",
            param="student.arch",
            code="unsupported_arch",
        )
    if teacher.format == "hf_archive" and arch in ("mlp", "cnn"):
        raise Unprocessable(
            f"A {arch} student cannot read text; use hf, transformer or from_teacher.",
            param="student.arch",
            code="unsupported_arch",
        )
    if arch == "from_teacher" and teacher.format in OPAQUE_TEACHERS:
        raise Unprocessable(
            f"A from_teacher student copies the teacher's layers, which a '{teacher.format}' "
            "teacher does not show; give the teacher as state_dict or safetensors with its "
            "teacher.arch, or as a Hugging Face archive.",
            param="student.arch",
            code="unsupported_arch",
        )
    losses = spec.losses
    for kind, loss in (("hidden", losses.hidden), ("attention", losses.attention)):
        if loss is not None and teacher.format in OPAQUE_TEACHERS:
            raise Unprocessable(
                f"losses.{kind} matches the teacher's layers, which a '{teacher.format}' teacher "
                "does not show; give the teacher as state_dict or safetensors with its "
                "teacher.arch, or as a Hugging Face archive.",
                param=f"losses.{kind}",
                code="unsupported_loss",
            )


def _check_task(spec: JobSpec, datasets: list[tuple[File, str]]) -> None:
    """Labels must suit the task: real-valued labels need regression, and regression needs
    numbers (integer labels are taken as numbers; csv class names are refused)."""
    for data, param in datasets:
        kind = data.meta.get("label_kind")
        if spec.task == "classification" and kind == "real":
            raise Unprocessable(
                f"File {data.id} has real-valued labels, which a classification job cannot "
                'train on; set "task": "regression" to distil a teacher with real outputs.',
                param="task",
                code="invalid_request",
            )
        if spec.task == "regression" and _has_class_names(data):
            raise Unprocessable(
                f"File {data.id} labels its rows with class names, but a regression job needs "
                'numeric targets; set "task": "classification" or give numeric labels.',
                param=param,
                code="invalid_request",
            )


def _has_class_names(data: File) -> bool:
    meta = data.meta
    if not meta.get("has_labels") or meta.get("label_kind") == "real":
        return False
    # csv labels that are not all integers are names (listed, or too many to list)
    return meta.get("classes") is not None or meta.get("num_classes") is None


def _check_devices(spec: JobSpec) -> None:
    """Where the operator declared the fleet, a job no host can ever take is refused now rather
    than left waiting."""
    largest = get_settings().fleet_devices_per_host
    if largest is not None and spec.resources.devices > largest:
        raise Unprocessable(
            f"resources.devices is {spec.resources.devices}, and the largest worker host of "
            f"this server has {largest} devices (DISTILL_FLEET_DEVICES_PER_HOST): a job runs on "
            "the devices of one host.",
            param="resources.devices",
            code="invalid_request",
        )


def request_hash(spec: JobSpec) -> str:
    """What the client sent, not the defaulted spec: a field that a later version adds with a
    default must not turn a replay across the upgrade into an ``idempotency_conflict``."""
    sent = spec.model_dump(mode="json", exclude_unset=True)
    canonical = json.dumps(sent, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def submit(
    session: Session, team_id: str, spec: JobSpec, idempotency_key: str | None
) -> tuple[Job, bool]:
    """Create and enqueue a job. Returns (job, created); an idempotent replay is not created.
    The scope commits; a scheduling pass follows the commit, so it sees the job."""
    digest = request_hash(spec)
    if idempotency_key is not None:
        existing = repository.get_by_idempotency_key(session, team_id, idempotency_key)
        if existing is not None:
            return _replay(existing, digest), False
    spec, _ = check_inputs(session, team_id, spec)
    job = lifecycle.enqueue(
        session,
        id=new_id("job"),
        team_id=team_id,
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        priority=spec.priority,
        teacher_file_id=spec.teacher.file_id,
        train_file_id=spec.data.train_file_id,
        validation_file_id=spec.data.validation_file_id,
        student_file_id=spec.student.file_id if isinstance(spec.student, PretrainedArch) else None,
        devices=spec.resources.devices,
        idempotency_key=idempotency_key,
        request_hash=digest,
    )
    if job is None:  # a concurrent request with the same Idempotency-Key won the race
        existing = repository.get_by_idempotency_key(session, team_id, idempotency_key or "")
        assert existing is not None  # its insert committed before ours skipped
        return _replay(existing, digest), False
    logs.bind_job(job.id, team_id)
    log.info("job %s submitted", job.id)
    after_commit(session, scheduler.try_pass)
    return job, True


def _replay(existing: Job, digest: str) -> Job:
    if existing.request_hash != digest:
        raise Conflict(
            "This Idempotency-Key was used with a different request body.",
            param="Idempotency-Key",
            code="idempotency_conflict",
        )
    return existing


def reprioritise(session: Session, caller_team_id: str | None, job_id: str, priority: int) -> Job:
    """Change a queued job's priority; ``caller_team_id`` None is the admin, who may change any
    team's job."""
    job = repository.get_job_for_update(session, job_id)
    if job is None or (caller_team_id is not None and job.team_id != caller_team_id):
        raise NotFound(f"No job {job_id}.", param="job_id")
    if job.status != JobStatus.queued:
        raise Conflict(
            f"The job is {job.status}: only a queued job's priority can change.",
            param="priority",
            code="job_not_queued",
        )
    if priority != job.priority:
        repository.add_event(
            session, job.id, "log", f"Priority changed from {job.priority} to {priority}."
        )
        job.priority = priority
        job.spec = {**job.spec, "priority": priority}
    session.flush()
    return job


def cancel(session: Session, team_id: str, job_id: str) -> Job:
    job = repository.get_job_for_update(session, job_id)
    if job is None or job.team_id != team_id:
        raise NotFound(f"No job {job_id}.", param="job_id")
    if JobStatus(job.status).is_final:
        raise Conflict(f"The job has already {job.status}.", code="job_finished")
    log.info("job %s: cancel requested while %s", job.id, job.status)
    if job.status == JobStatus.queued:
        lifecycle.finish(session, job, JobStatus.cancelled, message="Job cancelled while queued.")
    elif not job.cancel_requested:
        job.cancel_requested = True
        repository.add_event(session, job.id, "log", "Cancellation requested.")
    session.flush()
    return job
