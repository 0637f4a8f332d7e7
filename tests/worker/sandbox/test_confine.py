"""The training process's walls (worker/sandbox/confine.py): real bubblewrap sandboxes around real
training processes, teachers that try to reach past them, and what a worker without a sandbox
refuses to run."""

import dataclasses
import json
import socket
import sys
from pathlib import Path

import pytest

from tests.helpers.teachers import TEACHER_ARCHS, Digits, Thief, job_spec, save_teacher
from tests.worker.engine.conftest import Recorder
from worker.engine import EngineError
from worker.sandbox import confine
from worker.sandbox.process import SandboxSettings, TrainingProcess

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")

SETTINGS = SandboxSettings(memory_bytes=2 * 2**30, torch_threads=1, stop_grace_seconds=1.0)
UNCONFINED = dataclasses.replace(SETTINGS, sandbox="off", allow_unconfined_code=True)
SECRET = b"webhook secrets of every team"
UPLOAD = b"another team's uploaded file."  # as long as SECRET: the thief copies byte for byte


@pytest.fixture
def thief(mlp_digits: Digits, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(teacher, secret, victim): a Thief saved as TorchScript, and the files it goes for."""
    secret = tmp_path / "var" / "distill.db-wal"
    victim = tmp_path / "var" / "storage" / "files" / "file_of_another_team"
    victim.parent.mkdir(parents=True)
    secret.write_bytes(SECRET)
    victim.write_bytes(UPLOAD)
    model = Thief(mlp_digits.trained.model, secret, victim, len(SECRET))
    return save_teacher(model, tmp_path / "thief.pt", "torchscript"), secret, victim


def test_a_teacher_cannot_read_or_change_files_outside_its_job(
    mlp_digits: Digits, tmp_path: Path, thief: tuple[Path, Path, Path]
) -> None:
    teacher, _, victim = thief
    job = mlp_digits.job(tmp_path / "job", job_spec(epochs=1), teacher_path=teacher)

    with pytest.raises(EngineError) as failed:
        TrainingProcess(job, Recorder(), SETTINGS).run()

    assert failed.value.code == "teacher_load_failed", failed.value.message
    assert "tried to open a file" in failed.value.message
    assert victim.read_bytes() == UPLOAD
    written = [p.read_bytes() for p in (tmp_path / "job").rglob("*") if p.is_file()]
    assert not any(SECRET in content for content in written)


def test_without_the_sandbox_the_same_teacher_does_reach_them(
    mlp_digits: Digits, tmp_path: Path, thief: tuple[Path, Path, Path]
) -> None:
    """The payload above is real: only the sandbox stops it."""
    teacher, _, victim = thief
    job = mlp_digits.job(tmp_path / "job", job_spec(epochs=1), teacher_path=teacher)

    TrainingProcess(job, Recorder(), UNCONFINED).run()

    assert victim.read_bytes() == SECRET


# A training process of the test's own (the protocol as in test_protocol.py) that looks at its
# walls from inside and reports what it saw in its result's metrics.
LOOK = """
import json, os, socket, sys
job = json.loads(sys.stdin.readline())["job"]["value"]
seen = {"uid": os.getuid(), "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}
seen["environ"] = sorted(os.environ)
def attempt(name, action):
    try:
        action()
        seen[name] = "done"
    except OSError as e:
        seen[name] = type(e).__name__
attempt("connect", lambda: socket.create_connection(("127.0.0.1", PORT), timeout=5))
attempt("read_secret", lambda: open(SECRET).read())
attempt("write_teacher", lambda: open(job["teacher_path"]["value"], "ab").write(b"x"))
attempt("write_system", lambda: open(sys.executable, "ab").write(b"x"))
out = job["output_dir"]["value"]
attempt("write_output", lambda: open(os.path.join(out, "ok"), "w").write("x"))
cache = job["cache_dir"]["value"]
seen["cache_neighbours"] = sorted(os.listdir(os.path.dirname(cache)))
attempt("read_other_cache", lambda: open(OTHER_ENTRY).read())
sys.stdout.write(json.dumps({"type": "result", "result": {"__distill__": "EngineResult",
    "value": {"metrics": seen, "artifacts": []}}}) + "\\n")
"""


def test_inside_the_walls_a_process_sees_only_its_job(mlp_digits: Digits, tmp_path: Path) -> None:
    secret = tmp_path / "var" / "distill.db"
    secret.parent.mkdir()
    secret.write_text("not for teachers")
    other = tmp_path / "cache" / ("b" * 64) / "entry.safetensors"
    other.parent.mkdir(parents=True)
    other.write_text("another job's teacher outputs")
    job = mlp_digits.job(tmp_path / "job", job_spec(), cache_dir=tmp_path / "cache" / ("a" * 64))
    with socket.socket() as listener:  # a service on this machine's loopback
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        lines = LOOK.replace("PORT", str(listener.getsockname()[1]))
        lines = lines.replace("OTHER_ENTRY", repr(str(other))).replace("SECRET", repr(str(secret)))
        process = TrainingProcess(job, Recorder(), SETTINGS, command=[sys.executable, "-c", lines])
        seen = process.run().metrics

    assert process.confined
    assert seen["uid"] == confine.NOBODY
    assert seen["processes"] == [1, 2]  # bwrap's init and itself: nothing of the worker's
    assert not any(name.startswith(("DISTILL_", "AWS_")) for name in seen["environ"])
    assert seen["connect"] == "ConnectionRefusedError"  # its own, empty loopback
    assert seen["read_secret"] == "FileNotFoundError"
    assert seen["write_teacher"] == seen["write_system"] == "OSError"  # read-only
    assert seen["write_output"] == "done" and (job.output_dir / "ok").read_text() == "x"
    assert seen["cache_neighbours"] == ["a" * 64]
    assert seen["read_other_cache"] == "FileNotFoundError"


# A training process that reads its pretrained student's file and tries to change it.
STUDENT_LOOK = """
import json, sys
job = json.loads(sys.stdin.readline())["job"]["value"]
student, seen = job["student_path"]["value"], {}
try:
    seen["read"] = open(student, "rb").read().decode()
    open(student, "ab").write(b"x")
    seen["write"] = "done"
except OSError as e:
    seen["write"] = type(e).__name__
sys.stdout.write(json.dumps({"type": "result", "result": {"__distill__": "EngineResult",
    "value": {"metrics": seen, "artifacts": []}}}) + "\\n")
"""


def test_a_pretrained_student_file_is_readable_and_read_only(
    mlp_digits: Digits, tmp_path: Path
) -> None:
    student = tmp_path / "store" / "files" / "file_student"
    student.parent.mkdir(parents=True)
    student.write_text("student weights")
    job = mlp_digits.job(tmp_path / "job", job_spec(), student_path=student, student_format="gguf")
    command = [sys.executable, "-c", STUDENT_LOOK]

    process = TrainingProcess(job, Recorder(), SETTINGS, command=command)
    seen = process.run().metrics

    assert process.confined
    assert seen == {"read": "student weights", "write": "OSError"}
    assert student.read_text() == "student weights"


def test_a_sandbox_that_would_expose_the_store_is_not_started(
    mlp_digits: Digits, tmp_path: Path
) -> None:
    job = mlp_digits.job(tmp_path / "job", job_spec(epochs=1))
    settings = dataclasses.replace(SETTINGS, forbidden=(job.output_dir / "var" / "distill.db",))

    with pytest.raises(EngineError) as failed:
        TrainingProcess(job, Recorder(), settings).run()

    assert failed.value.code == "sandbox_unavailable"
    assert "not started" in failed.value.message


@pytest.mark.parametrize("fmt", sorted(confine.CODE_FORMATS))
def test_without_a_sandbox_a_teacher_that_is_a_program_is_refused(
    mlp_digits: Digits, tmp_path: Path, fmt: str
) -> None:
    job = mlp_digits.job(
        tmp_path, job_spec(epochs=1), teacher_path=mlp_digits.teachers[fmt], teacher_format=fmt
    )
    settings = dataclasses.replace(SETTINGS, sandbox="off")

    with pytest.raises(EngineError) as failed:
        TrainingProcess(job, Recorder(), settings).run()

    assert failed.value.code == "sandbox_unavailable"
    assert "DISTILL_ALLOW_UNCONFINED_CODE_TEACHERS=true" in failed.value.message
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_without_a_sandbox_a_teacher_of_plain_weights_still_runs(
    mlp_digits: Digits, tmp_path: Path
) -> None:
    spec = job_spec(epochs=1, teacher_arch=TEACHER_ARCHS["mlp"])
    job = mlp_digits.job(
        tmp_path,
        spec,
        teacher_path=mlp_digits.teachers["safetensors"],
        teacher_format="safetensors",
    )
    process = TrainingProcess(job, Recorder(), dataclasses.replace(SETTINGS, sandbox="off"))

    assert process.run().metrics["student_accuracy"] > 0
    assert not process.confined


def test_bwrap_is_required_when_the_operator_says_so(
    mlp_digits: Digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    confine.sandbox_problem.cache_clear()
    try:
        job = mlp_digits.job(tmp_path, job_spec(epochs=1))
        settings = dataclasses.replace(SETTINGS, sandbox="bwrap")
        with pytest.raises(EngineError) as failed:
            TrainingProcess(job, Recorder(), settings).run()
    finally:
        confine.sandbox_problem.cache_clear()

    assert failed.value.code == "sandbox_unavailable"
    assert "apt-get install bubblewrap" in failed.value.message


def test_the_probe_says_this_machine_can_build_the_sandbox() -> None:
    """The test command installs bubblewrap (scripts/ensure-bwrap.sh); everything above assumes
    it works here, so a machine where it does not fails loudly instead of testing less."""
    assert confine.sandbox_problem() is None, json.dumps(confine.sandbox_problem())
