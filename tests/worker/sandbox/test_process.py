"""Jobs in a training process of their own, with no database or broker: the same results as in
process, none of the worker's secrets, and every way a child can end mapped to the job's error,
with this process (the worker's stand-in) going on to the next job."""

import dataclasses
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.teachers import Digits, MemoryBomb, job_spec, save_teacher
from tests.worker.engine.conftest import Recorder
from worker.engine import EngineError, JobCancelled, run_job
from worker.sandbox.process import SandboxSettings, TrainingProcess

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")

BOUND = 2 * 2**30  # address space: torch and a small job need under 1 GiB
SETTINGS = SandboxSettings(memory_bytes=BOUND, torch_threads=1, stop_grace_seconds=1.0)
TIMING = {"teacher_latency_ms", "student_latency_ms", "speedup"}  # and every *_seconds
SECRETS = {
    "DISTILL_DATABASE_URL": "postgresql://distill:hunter2@db:5432/distill",
    "DISTILL_BROKER_URL": "redis://:hunter3@redis:6379/0",
    "DISTILL_ADMIN_KEY": "dk_admin_not_for_teachers",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-not-for-teachers",
}


def untimed(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING and not k.endswith("_seconds")}


def long_job(digits: Digits, tmp_path: Path, **overrides):
    """Minutes of training: something to stop, kill or time out."""
    return digits.job(tmp_path, job_spec(epochs=1000, batch_size=4), **overrides)


@dataclass
class OnFirstProgress(Recorder):
    """Does ``act(process)`` at the first progress report, then asks to stop if ``stop``."""

    process: TrainingProcess | None = None
    act: object = None
    stop: bool = False

    def on_progress(self, progress, points) -> None:
        first = not self.progress
        super().on_progress(progress, points)
        if first and callable(self.act):
            self.act(self.process)

    def should_stop(self) -> bool:
        return self.stop and bool(self.progress)


def run(job, callbacks: OnFirstProgress, settings: SandboxSettings = SETTINGS, **kwargs):
    process = TrainingProcess(job, callbacks, settings, **kwargs)
    callbacks.process = process
    return process, process.run


def test_a_job_in_the_sandbox_gives_what_it_gives_in_process(
    mlp_digits: Digits, tmp_path: Path
) -> None:
    spec = job_spec(epochs=2, baseline=True)
    here, there = Recorder(), Recorder()

    expected = run_job(mlp_digits.job(tmp_path / "here", spec), here)
    result = TrainingProcess(mlp_digits.job(tmp_path / "there", spec), there, SETTINGS).run()

    assert untimed(result.metrics) == untimed(expected.metrics)
    assert [a.name for a in result.artifacts] == [a.name for a in expected.artifacts]
    assert all(a.parent == tmp_path / "there" / "out" and a.is_file() for a in result.artifacts)
    assert [(p.phase, p.epoch, p.step, p.fraction) for p in there.progress] == [
        (p.phase, p.epoch, p.step, p.fraction) for p in here.progress
    ]
    assert there.points == here.points  # every loss, learning rate and validation value
    assert [log[:2] for log in there.logs] == [log[:2] for log in here.logs]  # level, message


def test_the_training_process_sees_none_of_the_workers_secrets(
    mlp_digits: Digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    secret_file = tmp_path / "credentials"
    secret_file.write_text("aws_secret_access_key = also-not-for-teachers\n")
    inheritable = os.open(secret_file, os.O_RDONLY)
    os.set_inheritable(inheritable, True)  # even a descriptor the worker leaves inheritable
    seen: dict[str, object] = {}

    def look(process: TrainingProcess) -> None:
        proc = Path(f"/proc/{process.pid}")
        seen["environ"] = (proc / "environ").read_bytes()
        seen["limits"] = (proc / "limits").read_text()
        seen["fds"] = [os.readlink(fd) for fd in (proc / "fd").iterdir()]

    try:
        _, start = run(long_job(mlp_digits, tmp_path), OnFirstProgress(act=look, stop=True))
        with pytest.raises(JobCancelled):
            start()
    finally:
        os.close(inheritable)

    environ = dict(entry.split(b"=", 1) for entry in seen["environ"].split(b"\0") if b"=" in entry)
    for key, value in SECRETS.items():
        assert key.encode() not in environ
        assert value.encode() not in seen["environ"]
    assert not any(key.startswith(b"DISTILL_") for key in environ)
    assert environ[b"HF_HUB_OFFLINE"] == environ[b"TRANSFORMERS_OFFLINE"] == b"1"
    home = Path(environ[b"HOME"].decode())
    assert home.name == "home" and home.parent.name.startswith("distill-job-")
    assert not home.exists()  # the scratch directory goes with the job
    assert str(secret_file) not in seen["fds"]
    address_space = next(line for line in seen["limits"].splitlines() if "address space" in line)
    assert address_space.split()[3:5] == [str(BOUND), str(BOUND)]  # soft and hard


def test_a_teacher_that_allocates_past_the_bound_fails_with_out_of_memory(
    mlp_digits: Digits, tmp_path: Path
) -> None:
    bomb = save_teacher(
        MemoryBomb(mlp_digits.trained.model, 2 * BOUND), tmp_path / "bomb", "torchscript"
    )
    job = mlp_digits.job(tmp_path / "bomb_job", job_spec(epochs=1), teacher_path=bomb)

    with pytest.raises(EngineError) as failed:
        TrainingProcess(job, Recorder(), SETTINGS).run()

    assert failed.value.code == "out_of_memory"
    # and the worker, here this process, runs the next job as if nothing happened
    after = TrainingProcess(
        mlp_digits.job(tmp_path / "next", job_spec(epochs=1)), Recorder(), SETTINGS
    )
    assert after.run().metrics["student_accuracy"] > 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_a_training_process_that_dies_fails_its_job_naming_the_signal(
    mlp_digits: Digits, tmp_path: Path, sig: signal.Signals
) -> None:
    callbacks = OnFirstProgress(act=lambda process: os.kill(process.pid, sig))
    process, start = run(long_job(mlp_digits, tmp_path), callbacks)

    with pytest.raises(EngineError) as failed:
        start()

    assert failed.value.code == "training_process_died"
    assert sig.name in failed.value.message
    assert process.returncode == -sig


def test_the_time_limit_kills_a_job_that_runs_too_long(mlp_digits: Digits, tmp_path: Path) -> None:
    settings = SandboxSettings(memory_bytes=BOUND, timeout_seconds=10, torch_threads=1)
    process, start = run(long_job(mlp_digits, tmp_path), OnFirstProgress(), settings)

    with pytest.raises(EngineError) as failed:
        start()

    assert failed.value.code == "time_limit_exceeded"
    assert "10 seconds" in failed.value.message
    assert process.returncode == -signal.SIGKILL


def test_cancel_stops_the_job_at_a_checkpoint(mlp_digits: Digits, tmp_path: Path) -> None:
    job = long_job(mlp_digits, tmp_path)
    # However slow a loaded machine makes saving and exiting, the child is not killed here.
    patient = dataclasses.replace(SETTINGS, stop_grace_seconds=120)
    process, start = run(job, OnFirstProgress(stop=True), patient)

    with pytest.raises(JobCancelled):
        start()

    assert process.returncode == 0  # it stopped by itself, after saving
    assert job.checkpoint_path.exists()


def test_cancel_kills_a_training_process_that_does_not_stop(
    mlp_digits: Digits, tmp_path: Path
) -> None:
    stuck = OnFirstProgress(act=lambda process: os.kill(process.pid, signal.SIGSTOP), stop=True)
    process, start = run(long_job(mlp_digits, tmp_path), stuck)

    with pytest.raises(JobCancelled, match="was killed"):
        start()

    assert process.returncode == -signal.SIGKILL


def test_a_lost_lease_kills_the_training_process_at_once(
    mlp_digits: Digits, tmp_path: Path
) -> None:
    lost = threading.Event()
    process, start = run(
        long_job(mlp_digits, tmp_path), OnFirstProgress(act=lambda _: lost.set()), abort=lost
    )

    with pytest.raises(JobCancelled, match="lease"):
        start()

    assert process.returncode == -signal.SIGKILL  # killed, not asked: no checkpoint is written
