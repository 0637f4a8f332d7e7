"""Loss averages and progress reports, paced so reporting costs (almost) nothing per step."""

import math
import time
from collections.abc import Callable, Sequence

import torch

from worker.engine.job import Callbacks, Phase, Progress
from worker.engine.losses import LossTerms

LOSS_NAMES = ("train_loss", "kd_loss", "ce_loss", "hidden_loss", "attention_loss")
# Reported even when switched off (as None), as the contract's metric points list them.
ALWAYS_REPORTED = LOSS_NAMES[:3]


class LossMeter:
    """Running sums of the loss terms, kept as tensors on the device so a step never waits for
    the GPU; ``flush`` syncs once (the training loop checks its means for divergence)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        # The epoch's train_loss so far (sum over batches, batches), kept across flushes.
        self.epoch_sum, self.epoch_count = 0.0, 0

    def add(self, terms: LossTerms) -> None:
        for name, value in zip(LOSS_NAMES, terms, strict=True):
            if value is not None:
                previous = self.sums.get(name)
                self.sums[name] = value.detach() if previous is None else previous + value.detach()
        self.count += 1

    def combine(self, total: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Take in the other ranks' batches since the last flush: ``total`` sums a vector over
        the ranks. Every rank has the same terms on, though one may have no batch to add."""
        zero = torch.zeros(())
        sums = [self.sums.get(name, zero).detach().cpu().double() for name in LOSS_NAMES]
        present = [float(name in self.sums) for name in LOSS_NAMES]
        vector = torch.cat([torch.stack(sums), torch.tensor([*present, self.count])])
        summed = total(vector).tolist()
        n = len(LOSS_NAMES)
        self.sums = {
            name: torch.tensor(summed[i]) for i, name in enumerate(LOSS_NAMES) if summed[n + i] > 0
        }
        self.count = int(summed[2 * n])

    def flush(self) -> dict[str, float | None]:
        """Mean of each term since the last flush (None for a term switched off)."""
        names = list(self.sums)
        values = torch.stack(list(self.sums.values())).tolist() if names else []
        means: dict[str, float | None] = dict.fromkeys(ALWAYS_REPORTED)
        for name, total in zip(names, values, strict=True):
            means[name] = total / self.count
        if "train_loss" in self.sums:
            self.epoch_sum += values[names.index("train_loss")]
            self.epoch_count += self.count
        self.sums, self.count = {}, 0
        return means

    def epoch_mean(self) -> float | None:
        """The mean train_loss over every batch flushed since the last call (the epoch's, when
        called at an epoch end after ``flush``); the model card's curve."""
        mean = self.epoch_sum / self.epoch_count if self.epoch_count else None
        self.epoch_sum, self.epoch_count = 0.0, 0
        return mean


class ProgressClock:
    """Paces ``on_progress`` to one call per ``interval`` seconds and estimates the time left.

    Each phase (the student, then the optional baseline) trains ``epochs`` epochs and counts its
    own steps; the progress it sends counts epochs within the phase and steps across the job."""

    def __init__(
        self,
        callbacks: Callbacks,
        interval: float,
        steps_per_epoch: int,
        epochs: int,
        phases: Sequence[Phase],
        runs: int = 1,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.callbacks = callbacks
        self.now = now
        self.interval = interval
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs  # per phase: the spec's
        self.phases = list(phases)
        self.phase_steps = steps_per_epoch * epochs
        # A sweep trains the student ``runs`` times; ``run`` is the one under way (0-based).
        self.runs, self.run = runs, 0
        self.total_steps = self.phase_steps * (runs + len(self.phases) - 1)
        self.last = now()
        # (time, job step) the run under way began at in this session: the pace of the time
        # left. A baseline's steps (no teacher) are faster than the student's, so each run
        # measures its own; a resumed run's earlier steps ran on another clock.
        self.start: tuple[float, int] | None = None

    def job_step(self, phase: Phase, step: int) -> int:
        """Steps across the whole job: a later phase's (or sweep run's) count on from the
        earlier ones'."""
        earlier = self.run if phase == "student" else self.runs + self.phases.index(phase) - 1
        return earlier * self.phase_steps + step

    def begin(self, phase: Phase, step: int) -> None:
        """A run (the student, a sweep run, the baseline) starts or resumes at ``step``."""
        self.start = (self.now(), self.job_step(phase, step))

    def due(self) -> bool:
        return self.now() - self.last >= self.interval

    def send(self, phase: Phase, step: int, points: list[dict]) -> None:
        """Report ``phase`` at its own ``step`` (1-based, counted within the phase)."""
        self.last = self.now()
        self.callbacks.on_progress(self.progress(phase, step), points)

    def progress(self, phase: Phase, step: int) -> Progress:
        job_step = self.job_step(phase, step)
        return Progress(
            phase=phase,
            epoch=math.ceil(step / self.steps_per_epoch),
            epochs=self.epochs,
            step=job_step,
            total_steps=self.total_steps,
            fraction=job_step / self.total_steps,
            eta_seconds=self._eta(job_step),
            run=self.run if self.runs > 1 and phase == "student" else None,
            runs=self.runs if self.runs > 1 else None,
        )

    def _eta(self, step: int) -> float | None:
        """The steps left at the pace of the run under way (a later run's pace is unknown yet)."""
        if self.start is None or step <= self.start[1]:
            return None
        elapsed = self.now() - self.start[0]
        return elapsed / (step - self.start[1]) * (self.total_steps - step)
