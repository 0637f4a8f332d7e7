"""What changes over a run: the learning rate, the temperature and alpha, each a pure function of
the optimizer step, so that resuming needs no scheduler state (nanoGPT's ``get_lr``).

``step`` is 0-based: the optimizer step about to be taken. ``total_steps`` is the run's number of
optimizer steps (``epochs`` times the optimizer steps per epoch).
"""

import math
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from jobspec import Hyperparameters


def learning_rate(
    step: int, base: float, schedule: str, warmup_steps: int, total_steps: int
) -> float:
    """Linear warm-up over ``warmup_steps`` (from 0: step s takes base * (s + 1) / (warmup + 1)),
    then ``constant``, or a ``cosine`` or ``linear`` decay that would reach 0 at ``total_steps``,
    the step after the last."""
    if step < warmup_steps:
        return base * (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return base
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return base * (1.0 - progress)
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


def interpolate(step: int, start: float, end: float, total_steps: int) -> float:
    """Linear from ``start`` at the first step to ``end`` at the last (step total_steps - 1)."""
    if total_steps <= 1:
        return end
    progress = min(1.0, step / (total_steps - 1))
    return start + (end - start) * progress


class StepValues(NamedTuple):
    learning_rate: float
    temperature: float
    alpha: float


@dataclass(frozen=True)
class Schedules:
    """The three schedules of one training run. ``constant`` is True when nothing changes, so the
    training loop can skip per-step work on the default path."""

    base_lr: float
    lr_schedule: str
    warmup_steps: int
    temperature: tuple[float, float]  # (start, end); end == start when constant
    alpha: tuple[float, float]
    total_steps: int

    @cached_property  # read before every step
    def constant(self) -> bool:
        return (
            self.lr_schedule == "constant"
            and self.warmup_steps == 0
            and self.temperature[0] == self.temperature[1]
            and self.alpha[0] == self.alpha[1]
        )

    def at(self, step: int) -> StepValues:
        return StepValues(
            learning_rate(
                step, self.base_lr, self.lr_schedule, self.warmup_steps, self.total_steps
            ),
            interpolate(step, *self.temperature, self.total_steps),
            interpolate(step, *self.alpha, self.total_steps),
        )


def temperatures(hp: Hyperparameters) -> tuple[float, float]:
    """The temperature at the first step and at the last."""
    end = hp.temperature_end if hp.temperature_schedule == "linear" else None
    return hp.temperature, hp.temperature if end is None else end


def alphas(hp: Hyperparameters) -> tuple[float, float]:
    """Alpha at the first step and at the last."""
    end = hp.alpha_end if hp.alpha_schedule == "linear" else None
    return hp.alpha, hp.alpha if end is None else end
