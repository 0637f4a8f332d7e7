"""Real teachers (trained on digits once per session), their files in every format, and a job
builder. Nothing here needs a database or a broker."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from tests.helpers.teachers import TEACHER_ARCHS, Digits, save_digits
from tests.helpers.text import trained_text_teacher, write_hf_archive
from worker.engine import NullCallbacks, Progress
from worker.engine.job import Phase

PHASES: tuple[Phase, ...] = ("student", "baseline")  # the order a job trains them in

# These models are tiny: a second intra-op thread buys nothing, and on a shared two-core
# machine it makes torch's threads spin against other processes (8x slower, measured).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cnn_digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    return save_digits(tmp_path_factory.mktemp("cnn_digits"), "cnn")


@pytest.fixture(scope="session")
def mlp_digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    return save_digits(tmp_path_factory.mktemp("mlp_digits"), "mlp")


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """(model, tokenizer, texts, labels): a 4-layer BERT trained on 1,000 Rotten Tomatoes
    reviews for a few seconds."""
    return trained_text_teacher(tmp_path_factory.mktemp("text_teacher"), n=1000)


@pytest.fixture(scope="session")
def teacher_zip(trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, tokenizer, _, _ = trained
    return write_hf_archive(model, tokenizer, tmp_path_factory.mktemp("zip") / "teacher.zip")


@pytest.fixture
def teacher_archs() -> dict[str, dict]:
    return TEACHER_ARCHS


@dataclass
class Recorder(NullCallbacks):
    """Records every callback; asks to stop once a progress report reaches ``stop_after``, a
    (phase, epoch) pair (with a long progress_interval: that epoch's end), or ``stop_at_step``,
    counted across the job."""

    stop_after: tuple[Phase, int] | None = None
    stop_at_step: int | None = None
    progress: list[Progress] = field(default_factory=list)
    points: list[dict] = field(default_factory=list)
    logs: list[tuple[str, str, dict | None]] = field(default_factory=list)
    # (path, phase, epoch, step) of every checkpoint, as read from the file when announced
    checkpoints: list[tuple[Path, str, int, int]] = field(default_factory=list)
    cache_entries: list[Path] = field(default_factory=list)

    def on_checkpoint(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.checkpoints.append((path, state["phase"], state["epoch"], state["step"]))

    def on_teacher_cache(self, path: Path) -> None:
        self.cache_entries.append(path)

    def on_progress(self, progress: Progress, points: list[dict]) -> None:
        self.progress.append(progress)
        self.points.extend(points)

    def on_log(self, level: str, message: str, data: dict | None = None) -> None:
        self.logs.append((level, message, data))

    def should_stop(self) -> bool:
        if not self.progress:
            return False
        last = self.progress[-1]
        reached = (PHASES.index(last.phase), last.epoch)
        by_epoch = self.stop_after is not None and reached >= (
            PHASES.index(self.stop_after[0]),
            self.stop_after[1],
        )
        by_step = self.stop_at_step is not None and last.step >= self.stop_at_step
        return by_epoch or by_step

    def messages(self, level: str) -> list[str]:
        return [message for lvl, message, _ in self.logs if lvl == level]
