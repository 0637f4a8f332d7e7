"""Teacher-output caching: the teacher's training logits are computed once per job, stored by
content, reused by a later job on the same teacher and data, and change nothing in the result."""

import math
from pathlib import Path

import pytest
import torch

from tests.helpers.teachers import Digits, job_spec
from tests.worker.engine.conftest import Recorder
from worker.engine import EngineResult, JobCancelled, run_job
from worker.engine import teacher_cache as cache_module
from worker.engine.teacher import Teacher

SPEC = job_spec(epochs=2)


class TeacherCalls:
    """Counts the teacher's forward passes on more than one row (latency timing uses one row, a
    varying number of times), and the table builds."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.batches = 0
        self.builds = 0
        forward, build = Teacher.__call__, cache_module.compute_logits

        def counted_forward(teacher: Teacher, x: torch.Tensor) -> torch.Tensor:
            self.batches += len(x) > 1
            return forward(teacher, x)

        def counted_build(teacher: Teacher, x: torch.Tensor) -> torch.Tensor:
            self.builds += 1
            return build(teacher, x)

        monkeypatch.setattr(Teacher, "__call__", counted_forward)
        monkeypatch.setattr(cache_module, "compute_logits", counted_build)

    def reset(self) -> None:
        self.batches = self.builds = 0


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> TeacherCalls:
    return TeacherCalls(monkeypatch)


def _stable(metrics: dict) -> dict:
    timed = ("seconds", "latency", "speedup", "teacher_cache")
    return {k: v for k, v in metrics.items() if not any(t in k for t in timed)}


def _weights(result: EngineResult) -> bytes:
    return (result.artifacts[0].parent / "student.safetensors").read_bytes()


def _cache_logs(recorder: Recorder) -> list[str]:
    return [m for _, m, _ in recorder.logs if m.startswith(("Teacher cache", "Ignoring"))]


@pytest.fixture(scope="module")
def uncached(cnn_digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> EngineResult:
    """The teacher run on every batch, as before caching."""
    return run_job(cnn_digits.job(tmp_path_factory.mktemp("uncached"), SPEC, teacher_cache=False))


def test_a_second_job_on_the_same_teacher_and_data_hits_the_cache(
    cnn_digits: Digits, tmp_path: Path, calls: TeacherCalls, uncached: EngineResult
) -> None:
    cache = tmp_path / "cache"
    first, second = Recorder(), Recorder()

    missed = run_job(cnn_digits.job(tmp_path / "a", SPEC, cache_dir=cache), first)
    miss_batches, miss_builds = calls.batches, calls.builds
    calls.reset()
    hit = run_job(cnn_digits.job(tmp_path / "b", SPEC, cache_dir=cache), second)

    assert (missed.metrics["teacher_cache"], hit.metrics["teacher_cache"]) == ("miss", "hit")
    (entry,) = cache.iterdir()  # one entry, no temporary file left behind
    assert first.cache_entries == second.cache_entries == [entry]  # announced, written or found
    assert "Teacher cache miss" in _cache_logs(first)[0]
    assert "Teacher cache hit" in _cache_logs(second)[0]
    # The hit job never runs the teacher on training rows: only preflight and validation.
    train_rows = len(cnn_digits.trained.x_train)
    assert (miss_builds, calls.builds) == (1, 0)
    assert miss_batches - calls.batches == math.ceil(train_rows / cache_module.CHUNK_ROWS)
    assert uncached.metrics["teacher_cache"] == "off"
    # The same numbers, so the same student as running the teacher on every batch.
    for result in (missed, hit):
        assert _stable(result.metrics) == _stable(uncached.metrics)
        assert _weights(result) == _weights(uncached)


def test_without_a_cache_dir_the_logits_are_computed_once_per_job(
    cnn_digits: Digits, tmp_path: Path, calls: TeacherCalls
) -> None:
    with_table = run_job(cnn_digits.job(tmp_path / "a", SPEC))
    table_batches = calls.batches
    calls.reset()
    run_job(cnn_digits.job(tmp_path / "b", SPEC, teacher_cache=False))

    assert with_table.metrics["teacher_cache"] == "miss"
    steps = 2 * math.ceil(len(cnn_digits.trained.x_train) / 64)
    chunks = math.ceil(len(cnn_digits.trained.x_train) / cache_module.CHUNK_ROWS)
    assert calls.batches - table_batches == steps - chunks


def test_different_training_rows_miss(cnn_digits: Digits, tmp_path: Path) -> None:
    """The key hashes the rows the teacher sees, so another validation split is another entry."""
    cache = tmp_path / "cache"
    statuses = []
    for seed in (0, 1, 0):
        job = cnn_digits.job(
            tmp_path / f"seed{seed}_{len(statuses)}",
            job_spec(epochs=1, seed=seed),
            validation_path=None,
            cache_dir=cache,
        )
        statuses.append(run_job(job).metrics["teacher_cache"])

    assert statuses == ["miss", "miss", "hit"]
    assert len(list(cache.iterdir())) == 2


def test_another_teacher_misses(cnn_digits: Digits, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = run_job(cnn_digits.job(tmp_path / "a", SPEC, cache_dir=cache))
    other = run_job(cnn_digits.job(tmp_path / "b", SPEC, cache_dir=cache, teacher_sha256="0" * 64))

    assert (first.metrics["teacher_cache"], other.metrics["teacher_cache"]) == ("miss", "miss")


@pytest.mark.parametrize("damage", ["garbage", "wrong_shape"])
def test_a_damaged_cache_file_is_ignored_and_rebuilt(
    cnn_digits: Digits, tmp_path: Path, uncached: EngineResult, damage: str
) -> None:
    from safetensors.torch import save_file

    cache = tmp_path / "cache"
    run_job(cnn_digits.job(tmp_path / "a", SPEC, cache_dir=cache))
    (entry,) = cache.iterdir()
    if damage == "garbage":
        entry.write_bytes(b"not a safetensors file")
    else:
        save_file({"logits": torch.zeros(3, 10)}, str(entry))

    recorder = Recorder()
    rebuilt = run_job(cnn_digits.job(tmp_path / "b", SPEC, cache_dir=cache), recorder)
    again = run_job(cnn_digits.job(tmp_path / "c", SPEC, cache_dir=cache))

    assert any("Ignoring" in m and entry.name in m for m in recorder.messages("warning"))
    assert rebuilt.metrics["teacher_cache"] == "miss"
    assert _weights(rebuilt) == _weights(uncached)
    assert again.metrics["teacher_cache"] == "hit"


def test_too_large_a_table_runs_the_teacher_per_batch(
    cnn_digits: Digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "MAX_TABLE_BYTES", 1000)
    recorder = Recorder()
    result = run_job(cnn_digits.job(tmp_path, SPEC, cache_dir=tmp_path / "cache"), recorder)

    assert result.metrics["teacher_cache"] == "off"
    assert "Teacher cache off" in _cache_logs(recorder)[0]
    assert not (tmp_path / "cache").exists()
    assert recorder.cache_entries == []


def test_labels_only_training_needs_no_teacher_outputs(cnn_digits: Digits, tmp_path: Path) -> None:
    result = run_job(cnn_digits.job(tmp_path, job_spec(epochs=1, alpha=0.0)))

    assert result.metrics["teacher_cache"] == "off"


def test_a_resumed_job_hits_the_cache_and_ends_the_same(
    cnn_digits: Digits, tmp_path: Path, uncached: EngineResult
) -> None:
    job = cnn_digits.job(tmp_path, SPEC, cache_dir=tmp_path / "cache", progress_interval=0.0)
    with pytest.raises(JobCancelled):
        run_job(job, Recorder(stop_at_step=7))

    resumed = run_job(job, Recorder())

    assert resumed.metrics["teacher_cache"] == "hit"
    assert _stable(resumed.metrics) == _stable(uncached.metrics)
    assert _weights(resumed) == _weights(uncached)
