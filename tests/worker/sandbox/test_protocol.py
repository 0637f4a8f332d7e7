"""The worker reads a training process as untrusted: real child processes that lie, break the
protocol or exit early, and what the worker makes of each."""

import io
import json
import logging
import sys
from pathlib import Path

import pytest

from app import logs
from tests.helpers.teachers import engine_job, job_spec
from tests.worker.engine.conftest import Recorder
from worker.engine import EngineError, EngineJob
from worker.sandbox.process import SandboxSettings, TrainingProcess

# Each child reads its job message, then does what the test's lines say; `out` is the job's
# output directory, `say` writes one message.
PRELUDE = """
import json, os, sys
job = json.loads(sys.stdin.readline())["job"]["value"]
out = job["output_dir"]["value"]
os.makedirs(out, exist_ok=True)
def say(message):
    sys.stdout.write(json.dumps(message) + "\\n")
    sys.stdout.flush()
def path(p):
    return {"__distill__": "Path", "value": p}
def result(*artifacts):
    say({"type": "result", "result": {"__distill__": "EngineResult", "value": {
        "metrics": {"student_accuracy": 1.0}, "artifacts": [path(a) for a in artifacts]}}})
"""


@pytest.fixture
def job(tmp_path: Path) -> EngineJob:
    missing = tmp_path / "never-read"
    return engine_job(tmp_path, job_spec(), missing, missing, missing)


def child(job: EngineJob, lines: str, recorder: Recorder | None = None) -> TrainingProcess:
    command = [sys.executable, "-c", PRELUDE + lines]
    settings = SandboxSettings(stop_grace_seconds=1.0)
    return TrainingProcess(job, recorder or Recorder(), settings, command=command)


def test_calls_are_relayed_and_a_result_in_the_output_directory_is_taken(job: EngineJob) -> None:
    recorder = Recorder()
    lines = """
say({"type": "call", "method": "on_log", "args": ["warning", "hi"], "kwargs": {"data": {"a": 1}}})
open(os.path.join(out, "student.pt"), "wb").write(b"weights")
result(os.path.join(out, "student.pt"))
"""
    result = child(job, lines, recorder).run()

    assert recorder.logs == [("warning", "hi", {"a": 1})]
    assert result.metrics == {"student_accuracy": 1.0}
    assert result.artifacts == [job.output_dir / "student.pt"]


@pytest.mark.parametrize(
    "lines",
    [
        'result("/etc/passwd")',
        'result(os.path.join(out, "..", "checkpoint.pt"))',
        'os.symlink("/etc/passwd", os.path.join(out, "student.pt"))\n'
        'result(os.path.join(out, "student.pt"))',
    ],
    ids=["outside", "dot-dot", "symlink"],
)
def test_artifacts_outside_the_output_directory_or_links_are_refused(
    job: EngineJob, lines: str
) -> None:
    (job.output_dir.parent / "checkpoint.pt").write_bytes(b"not an artifact")

    with pytest.raises(EngineError, match="refused") as failed:
        child(job, lines).run()

    assert failed.value.code == "training_process_died"


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        ('print("hello from the teacher")', "not JSON"),
        ('say({"type": "call", "method": "should_stop", "args": [], "kwargs": {}})', "should_stop"),
        ('say({"type": "call", "method": "__init__", "args": [], "kwargs": {}})', "__init__"),
        (
            'say({"type": "call", "method": "on_log", '
            '"args": [{"__distill__": "Popen", "value": {}}], "kwargs": {}})',
            "Popen",
        ),
        ('say({"type": "error", "code": "Robert\'); DROP TABLE", "message": "x"})', "code"),
        ('sys.stdout.write("x" * (9 * 2**20)); sys.stdout.flush()', "longer than"),
        ("sys.exit(3)", "status 3"),
    ],
    ids=["not-json", "should-stop", "dunder", "unknown-type", "bad-code", "too-long", "exit"],
)
def test_a_child_that_breaks_the_protocol_fails_its_job(
    job: EngineJob, lines: str, says: str
) -> None:
    recorder = Recorder()

    with pytest.raises(EngineError, match=says) as failed:
        child(job, lines + "\nimport time\ntime.sleep(60)", recorder).run()

    assert failed.value.code == "training_process_died"
    assert recorder.logs == [] and recorder.progress == []


def test_what_the_child_writes_to_stderr_is_logged_with_the_job(job: EngineJob) -> None:
    stream = io.StringIO()
    handler = logs.make_handler("json", stream)
    child_log = logging.getLogger("worker.sandbox.child")
    child_log.addHandler(handler)
    child_log.setLevel(logging.INFO)
    lines = """
sys.stderr.write("a warning from a library\\n")
sys.stderr.flush()
open(os.path.join(out, "student.pt"), "wb").write(b"weights")
result(os.path.join(out, "student.pt"))
"""
    try:
        with logs.job_context("job_stderr", "team_stderr"):
            child(job, lines).run()
    finally:
        child_log.removeHandler(handler)
        child_log.setLevel(logging.NOTSET)
    [entry] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert entry["message"] == "a warning from a library"
    assert (entry["logger"], entry["job_id"], entry["team_id"]) == (
        "worker.sandbox.child", "job_stderr", "team_stderr"
    )  # fmt: skip
