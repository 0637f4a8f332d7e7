"""Hyperparameter sweeps: the grid of runs one job trains, and the best run so far (the task
says which is better)."""

import itertools
from dataclasses import dataclass, field
from typing import Any

import torch

from jobspec import Sweep
from worker.engine.tasks import Task

SWEPT = ("temperature", "alpha", "learning_rate")  # the spec's order, and the rows' keys


def combinations(sweep: Sweep) -> list[dict[str, Any]]:
    """Every combination of the swept values, in a fixed order (the spec's lists, nested)."""
    lists = {name: getattr(sweep, name) for name in SWEPT if getattr(sweep, name)}
    grid = itertools.product(*lists.values())
    return [dict(zip(lists, values, strict=True)) for values in grid]


@dataclass
class SweepState:
    """The finished runs' rows and the best student so far (a CPU copy of its weights, and its
    early-stopping state), checkpointed with the run under way."""

    task: Task
    rows: list[dict] = field(default_factory=list)
    best: int | None = None  # index into rows
    best_model: dict[str, torch.Tensor] | None = None
    best_stopper: dict | None = None
    seconds: float = 0.0  # training time of the finished runs

    def add(self, row: dict, model: torch.nn.Module, stopper: dict | None, seconds: float) -> None:
        if self.best is None or self.task.better(row, self.rows[self.best]):
            self.best = len(self.rows)
            self.best_model = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
            self.best_stopper = stopper
        self.rows.append(row)
        self.seconds += seconds

    def table(self) -> list[dict]:
        return [row | {"chosen": i == self.best} for i, row in enumerate(self.rows)]

    def state_dict(self) -> dict:
        return {
            "rows": self.rows,
            "best": self.best,
            "best_model": self.best_model,
            "best_stopper": self.best_stopper,
            "seconds": self.seconds,
        }

    @classmethod
    def from_state(cls, task: Task, state: dict) -> "SweepState":
        return cls(task, **state)
