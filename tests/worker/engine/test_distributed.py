"""Jobs on two ranks: real processes, real gloo on the CPU, tiny students trained here (and a
text job on a Hugging Face teacher archive). Rank 0 alone reports, a sharded checkpoint resumes
to the very result of an uninterrupted run, a rank that dies ends the job as ``rank_lost`` with
no process left, and a checkpoint archive that is not what the engine writes is refused without
running a byte of it."""

import dataclasses
import io
import json
import os
import signal
import tarfile
from pathlib import Path

import pytest
import torch

from jobspec import JobSpec
from tests.helpers.teachers import Digits, engine_job, job_spec
from tests.helpers.text import SMALL_BERT, write_jsonl
from tests.worker.engine.conftest import Recorder
from tests.worker.engine.test_regression import (  # noqa: F401 (a fixture)
    Diabetes,
    diabetes,
    regression_spec,
)
from worker.engine import EngineError, EngineJob, EngineResult, JobCancelled, run_job, text
from worker.engine import sharded_checkpoint as sharded
from worker.engine.artifacts import load_student
from worker.engine.distributed import RANK_LOST
from worker.sandbox.process import SandboxSettings, TrainingProcess

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")

# Dropout makes each rank's random state part of what a resume has to restore.
STUDENT = {"arch": "mlp", "hidden_sizes": [32], "activation": "relu", "dropout": 0.2}
TIMED = ("seconds", "latency", "speedup")


def _stable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not any(t in k for t in TIMED)}


def gang_job(
    digits: Digits, tmp_path: Path, strategy: str = "ddp", world_size: int = 2, **hp
) -> EngineJob:
    hp = {"epochs": 2, "batch_size": 64} | hp
    spec = job_spec(student=STUDENT, **hp).model_dump() | {
        "resources": {"devices": world_size},
        "distributed": {"strategy": strategy},
    }
    spec = JobSpec.model_validate(spec)
    job = digits.job(tmp_path, spec, device="cpu", progress_interval=3600.0)
    return dataclasses.replace(job, world_size=world_size)


class GangRecorder(Recorder):
    """A Recorder for sharded checkpoints (an archive, not a torch.save file)."""

    def on_checkpoint(self, path: Path) -> None:
        with tarfile.open(path, "r:") as tar:
            member = tar.extractfile(sharded.STATE)
            assert member is not None
            state = json.loads(member.read())
        self.checkpoints.append((path, state["phase"], state["epoch"], state["step"]))


def rank_pids(parent: int) -> list[int]:
    """The rank processes ``parent`` spawned (not its resource tracker)."""
    children = []
    for task in Path(f"/proc/{parent}/task").iterdir():
        children += (task / "children").read_text().split()
    return [
        int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def gone(pid: int) -> bool:
    """Reaped, or a zombie whose parent has not reaped it yet (it runs nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture(scope="module")
def one_rank(mlp_digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> EngineResult:
    job = gang_job(mlp_digits, tmp_path_factory.mktemp("one"), world_size=1)
    return run_job(job, Recorder())


@pytest.fixture(scope="module")
def uninterrupted(
    mlp_digits: Digits, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[EngineResult, GangRecorder]]:
    """A whole two-rank job per strategy, and what it reported."""
    runs = {}
    for strategy in ("ddp", "fsdp"):
        recorder = GangRecorder()
        job = gang_job(mlp_digits, tmp_path_factory.mktemp(strategy), strategy)
        runs[strategy] = (run_job(job, recorder), recorder)
    return runs


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_job_trains_on_two_ranks(
    strategy: str, uninterrupted: dict, one_rank: EngineResult
) -> None:
    result, _ = uninterrupted[strategy]

    assert result.metrics["world_size"] == 2
    assert one_rank.metrics["world_size"] == 1
    # The same global batch, split between the ranks: the student learns what one device's does.
    assert result.metrics["student_accuracy"] == pytest.approx(
        one_rank.metrics["student_accuracy"], abs=0.05
    )
    assert result.metrics["agreement"] == pytest.approx(one_rank.metrics["agreement"], abs=0.05)
    assert result.metrics["student_accuracy"] > 0.15  # ten classes
    assert {p.name for p in result.artifacts} >= {"student.safetensors", "student.pt"}


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_only_rank_0_reports(
    strategy: str, uninterrupted: dict, mlp_digits: Digits, tmp_path: Path
) -> None:
    _, recorder = uninterrupted[strategy]
    alone = Recorder()
    job = gang_job(mlp_digits, tmp_path, world_size=1)
    run_job(job, alone)

    assert [p.step for p in recorder.progress] == [p.step for p in alone.progress]
    assert [m for _, m, _ in recorder.logs] == [m for _, m, _ in alone.logs]
    assert [c[1:3] for c in recorder.checkpoints] == [("student", 1), ("student", 2)]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_cancelled_job_resumes_to_the_same_result(
    strategy: str, uninterrupted: dict, mlp_digits: Digits, tmp_path: Path
) -> None:
    job = dataclasses.replace(gang_job(mlp_digits, tmp_path, strategy), progress_interval=0.0)
    stopped = GangRecorder(stop_at_step=25)  # mid-way through the second epoch

    with pytest.raises(JobCancelled):
        run_job(job, stopped)
    assert [c[1:] for c in stopped.checkpoints] == [("student", 1, 20), ("student", 1, 25)]

    resumed = GangRecorder()
    result = run_job(job, resumed)

    assert "Resumed the student at epoch 1, step 25." in resumed.messages("info")
    assert _stable(result.metrics) == _stable(uninterrupted[strategy][0].metrics)


def test_a_checkpoint_of_another_world_size_is_refused(mlp_digits: Digits, tmp_path: Path) -> None:
    one = gang_job(mlp_digits, tmp_path, world_size=1)
    with pytest.raises(JobCancelled):
        run_job(dataclasses.replace(one, progress_interval=0.0), Recorder(stop_at_step=3))
    two = dataclasses.replace(one, world_size=2)

    with pytest.raises(EngineError) as failed:
        run_job(two)

    assert failed.value.code == sharded.WORLD_SIZE_MISMATCH
    assert "1 device(s) and this run has 2" in failed.value.message


class KillRank(GangRecorder):
    """SIGKILLs rank 1 (a child of ``parent``) at the first progress report."""

    def __init__(self, parent: int):
        super().__init__()
        self.parent, self.killed = parent, 0
        self.ranks: list[int] = []

    def on_progress(self, progress, points) -> None:
        super().on_progress(progress, points)
        if not self.killed:
            self.ranks = rank_pids(self.parent)
            self.killed = self.ranks[0]
            os.kill(self.killed, signal.SIGKILL)


def test_a_rank_that_dies_ends_the_job(mlp_digits: Digits, tmp_path: Path) -> None:
    job = dataclasses.replace(
        gang_job(mlp_digits, tmp_path, world_size=3, epochs=1000), progress_interval=0.0
    )
    recorder = KillRank(os.getpid())

    with pytest.raises(EngineError) as failed:
        run_job(job, recorder)

    assert failed.value.code == RANK_LOST
    assert "killed by SIGKILL" in failed.value.message
    assert len(recorder.ranks) == 2
    assert all(gone(pid) for pid in recorder.ranks)
    assert len(recorder.progress) == 1  # noticed at the very next step


def test_killing_the_training_process_kills_its_ranks(mlp_digits: Digits, tmp_path: Path) -> None:
    """The worker's hard kill (the sandbox's process group; in bwrap its PID namespace too)
    reaches every rank, and each dies with rank 0 anyway."""
    job = dataclasses.replace(gang_job(mlp_digits, tmp_path, epochs=1000), progress_interval=0.0)
    seen: list[int] = []

    class KillRankZero(GangRecorder):
        def on_progress(self, progress, points) -> None:
            super().on_progress(progress, points)
            if not seen:
                assert process.pid is not None
                seen.extend(rank_pids(process.pid))
                os.kill(process.pid, signal.SIGKILL)

    settings = SandboxSettings(torch_threads=1, stop_grace_seconds=1.0, sandbox="off")
    settings = dataclasses.replace(settings, allow_unconfined_code=True)
    process = TrainingProcess(job, KillRankZero(), settings)

    with pytest.raises(EngineError) as failed:
        process.run()

    assert failed.value.code == "training_process_died"
    assert len(seen) == 1
    assert gone(seen[0])


# -- archives that are not what the engine writes ---------------------------------------------


def _archive(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for member in members:
            payload = data.get(member.name)
            tar.addfile(member, io.BytesIO(payload) if payload is not None else None)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


class Payload:
    """Unpickled, it would write ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def _members(*files: tuple[tarfile.TarInfo, bytes]) -> tuple[list, dict]:
    return [f[0] for f in files], {f[0].name: f[1] for f in files}


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


@pytest.mark.parametrize(
    "member",
    [
        _file("../escaped.distcp", b"x"),
        _file("/tmp/absolute.json", b"x"),
        _file("sub/__0_0.distcp", b"x"),
        _link("__0_0.distcp", "/etc/passwd", tarfile.SYMTYPE),
        _link("__1_0.distcp", "state.json", tarfile.LNKTYPE),
        _file(".metadata", b"a pickle DCP would load"),
    ],
    ids=["dot-dot", "absolute", "folder", "symlink", "hardlink", "pickled-metadata"],
)
def test_an_archive_with_a_foreign_member_is_refused(
    member: tuple[tarfile.TarInfo, bytes], tmp_path: Path
) -> None:
    members, data = _members(_file(sharded.STATE, b"{}"), _file(sharded.METADATA, b"{}"), member)
    archive = _archive(tmp_path / "checkpoint.pt", members, data)
    (tmp_path / "into").mkdir()

    with pytest.raises(sharded.UnsafeCheckpoint):
        sharded.unpack(archive, tmp_path / "into")

    assert list((tmp_path / "into").iterdir()) == []
    assert not (tmp_path / "escaped.distcp").exists()


def test_a_shard_holding_a_pickle_payload_runs_nothing(mlp_digits: Digits, tmp_path: Path) -> None:
    """A real two-rank checkpoint with its shards swapped for code: the job ignores it (with a
    warning), starts over and finishes; the payload never ran."""
    job = dataclasses.replace(
        gang_job(mlp_digits, tmp_path / "job", epochs=1), progress_interval=0.0
    )
    with pytest.raises(JobCancelled):
        run_job(job, GangRecorder(stop_at_step=3))
    marker = tmp_path / "payload-ran"
    evil = io.BytesIO()
    torch.save({"weight": Payload(marker)}, evil)
    with tarfile.open(job.checkpoint_path, "r:") as tar:
        members = tar.getmembers()
        data = {m.name: tar.extractfile(m).read() for m in members}  # type: ignore[union-attr]
    metadata = json.loads(data[sharded.METADATA])
    for entry in metadata["storage"]:  # every tensor: the payload
        entry["start"], entry["length"] = 0, len(evil.getvalue())
    data[sharded.METADATA] = json.dumps(metadata).encode()
    for name in data:
        if name.endswith(".distcp"):
            data[name] = evil.getvalue()
    for member in members:
        member.size = len(data[member.name])
    _archive(job.checkpoint_path, members, data)

    recorder = GangRecorder()
    result = run_job(job, recorder)

    assert any("Ignoring an unreadable checkpoint" in m for m in recorder.messages("warning"))
    assert not any("Resumed" in m for m in recorder.messages("info"))
    assert result.metrics["world_size"] == 2
    assert not marker.exists()


def test_metadata_naming_anything_but_tensors_is_refused(tmp_path: Path) -> None:
    plain = {
        "version": "1",
        "tensors": {"x": {"dtype": "torch.float32", "size": [2], "chunks": [[[0], [2]]]}},
        "storage": [
            {"fqn": "x", "offset": [0], "index": 0, "path": "../../etc/passwd", "start": 0,
             "length": 8}
        ],
    }  # fmt: skip
    (tmp_path / sharded.METADATA).write_text(json.dumps(plain))

    with pytest.raises(sharded.UnsafeCheckpoint):
        sharded._JsonReader(tmp_path).read_metadata()
    plain["storage"][0]["path"] = "__0_0.distcp"
    plain["tensors"]["x"]["dtype"] = "object"
    (tmp_path / sharded.METADATA).write_text(json.dumps(plain))
    with pytest.raises(sharded.UnsafeCheckpoint):
        sharded._JsonReader(tmp_path).read_metadata()


def test_regression_with_a_baseline_and_early_stopping_on_two_ranks(
    diabetes: Diabetes,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    """fsdp's sharded weights through early stopping's best epoch and the baseline."""
    hp = {"epochs": 3, "early_stopping": {"metric": "val_loss", "patience": 1}}
    spec = regression_spec(baseline=True, **hp).model_dump()
    results = {}
    for world_size in (1, 2):
        ranks = spec | {"resources": {"devices": world_size}, "distributed": {"strategy": "fsdp"}}
        job = diabetes.job(tmp_path / str(world_size), JobSpec.model_validate(ranks), device="cpu")
        results[world_size] = run_job(dataclasses.replace(job, world_size=world_size)).metrics

    assert results[2]["world_size"] == 2
    for name in ("student_r2", "baseline_r2", "agreement_mse"):
        assert results[2][name] == pytest.approx(results[1][name], abs=0.05)
    assert results[2]["best_epoch"] == results[1]["best_epoch"]


@pytest.fixture(scope="module")
def reviews(trained, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    _, _, texts, labels = trained
    folder = tmp_path_factory.mktemp("reviews")
    return (
        write_jsonl(folder / "train.jsonl", texts[:600], labels[:600]),
        write_jsonl(folder / "val.jsonl", texts[600:800], labels[600:800]),
    )


def test_a_text_job_on_two_ranks(
    trained, teacher_zip: Path, reviews: tuple[Path, Path], tmp_path: Path
) -> None:
    """A Hugging Face teacher archive on jsonl text: each rank unpacks and loads the teacher,
    rank 0 computes its outputs once for all; the student (a BERT, its layers sharded one by one
    under fsdp) learns what it learns on one rank, and rank 0 writes the text artifacts."""
    _, tokenizer, texts, _ = trained
    results = {}
    for world_size, strategy in ((1, "ddp"), (2, "ddp"), (2, "fsdp")):
        spec = job_spec(student=SMALL_BERT, epochs=2, batch_size=32, learning_rate=0.003)
        written = spec.model_dump() | {
            "resources": {"devices": world_size},
            "distributed": {"strategy": strategy},
        }
        written["data"]["max_length"] = 48
        out = tmp_path / f"{world_size}-{strategy}"
        job = engine_job(
            out,
            JobSpec.model_validate(written),
            teacher_zip,
            *reviews,
            teacher_format="hf_archive",
            train_format="jsonl",
            validation_format="jsonl",
        )
        result = run_job(dataclasses.replace(job, world_size=world_size))
        results[world_size, strategy] = result.metrics
        assert {"student.pt", "student_hf.zip", "student.safetensors"} <= {
            p.name for p in result.artifacts
        }
        x = text.tokenize(texts[800:805], tokenizer, max_length=48)
        deployed = torch.jit.load(str(out / "out" / "student.pt"))
        with torch.no_grad():
            torch.testing.assert_close(
                deployed(*text.unpack(x)), load_student(out / "out")(x), atol=1e-5, rtol=1e-4
            )

    one = results[1, "ddp"]
    for strategy in ("ddp", "fsdp"):
        two = results[2, strategy]
        assert two["world_size"] == 2
        for name in ("student_accuracy", "agreement", "kl_divergence"):
            assert two[name] == pytest.approx(one[name], abs=0.02)
