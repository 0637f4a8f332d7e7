"""Loss averages and progress reports, paced so reporting costs (almost) nothing per step."""

import math
import time

import torch

from worker.engine.errors import TrainingDiverged
from worker.engine.job import Callbacks, Progress
from worker.engine.losses import LossTerms

LOSS_NAMES = ("train_loss", "kd_loss", "ce_loss")


class LossMeter:
    """Running sums of the loss terms, kept as tensors on the device so a step never waits for
    the GPU; ``flush`` syncs once and is where divergence is noticed."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, terms: LossTerms) -> None:
        for name, value in zip(LOSS_NAMES, terms, strict=True):
            if value is not None:
                previous = self.sums.get(name)
                self.sums[name] = value.detach() if previous is None else previous + value.detach()
        self.count += 1

    def flush(self) -> dict[str, float | None]:
        """Mean of each term since the last flush (None for a term switched off)."""
        names = list(self.sums)
        values = torch.stack(list(self.sums.values())).tolist() if names else []
        means: dict[str, float | None] = dict.fromkeys(LOSS_NAMES)
        for name, total in zip(names, values, strict=True):
            means[name] = total / self.count
        if not all(math.isfinite(v) for v in values):
            raise TrainingDiverged(
                "The training loss became NaN or infinite; lower learning_rate, or check the "
                "data's scale."
            )
        self.sums, self.count = {}, 0
        return means


class Reporter:
    """Paces ``on_progress`` to one call per ``interval`` seconds and estimates the time left."""

    def __init__(
        self, callbacks: Callbacks, interval: float, steps_per_epoch: int, epochs: int
    ) -> None:
        self.callbacks = callbacks
        self.interval = interval
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.total_steps = steps_per_epoch * epochs
        self.last = time.monotonic()
        self.start: tuple[float, int] | None = None  # (time, step) this session began at

    def begin(self, step: int) -> None:
        if self.start is None:
            self.start = (time.monotonic(), step)

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.interval

    def send(self, step: int, points: list[dict]) -> None:
        self.last = time.monotonic()
        self.callbacks.on_progress(self.progress(step), points)

    def progress(self, step: int) -> Progress:
        return Progress(
            epoch=math.ceil(step / self.steps_per_epoch),
            epochs=self.epochs,
            step=step,
            total_steps=self.total_steps,
            fraction=step / self.total_steps,
            eta_seconds=self._eta(step),
        )

    def _eta(self, step: int) -> float | None:
        # From this session's pace only: a resumed run's earlier steps ran on another clock.
        if self.start is None or step <= self.start[1]:
            return None
        elapsed = time.monotonic() - self.start[0]
        return elapsed / (step - self.start[1]) * (self.total_steps - step)
